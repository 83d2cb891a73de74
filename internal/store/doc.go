// Package store is what replicas of Gatehouse share, behind one small seam
// with two implementations:
//
//   - memory (the default): one replica, everything in this process, with
//     the same behaviour Gatehouse had before scale-out;
//   - redis: any number of replicas behind one address share back-channel
//     logout revocations, run an OIDC refresh once for the whole fleet, and
//     serve fleet-wide workload certificates issued once and renewed by the
//     one replica holding a lease.
//
// Four jobs, each a small interface a consumer can depend on alone:
//
//   - Revocations: Revoke writes through to Redis and publishes; Revoked
//     answers from a bounded local cache fed by pub/sub (never a round trip
//     on the hot path). On every (re)connect the full set is reloaded, so
//     nothing published while disconnected is missed.
//   - OnceRunner: Once(key, ttl, fn) runs fn once across replicas (SET NX PX
//     lock, compare-and-delete release); the others wait and reuse the bytes
//     the winner stored.
//   - Blobs and Leases: opaque values shared by key with change
//     notifications, and an exclusive, renewable lease naming the replica
//     that does a fleet-wide job.
//   - Health: Healthy for /readyz, Degraded, and SessionsUsable, which turns
//     false after Config.Redis.DownGrace with Redis unreachable when
//     on_down is "closed".
//
// Values are stored as given: callers encrypt anything secret before it
// reaches the store (Sealer does it with keys the caller owns). Revocation
// keys and lease names are stored in clear; Once keys are hashed.
package store
