{{/* Names, labels and the rendered gatehouse.yaml. */}}

{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatehouse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of the gatehouse pods; component distinguishes redis and edge. */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gatehouse
{{- end -}}

{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* <svc>.<namespace>.svc.<clusterDomain> of a chart Service suffix. */}}
{{- define "gatehouse.svcFQDN" -}}
{{- $ := index . 0 -}}
{{- printf "%s-%s.%s.svc.%s" (include "gatehouse.fullname" $) (index . 1) $.Release.Namespace $.Values.clusterDomain -}}
{{- end -}}

{{/* host:port Envoy dials for ADS: the headless xDS Service (STRICT_DNS → every replica). */}}
{{- define "gatehouse.xdsAddress" -}}
{{- printf "%s:%d" (include "gatehouse.svcFQDN" (list . "xds")) (int .Values.ports.xds) -}}
{{- end -}}

{{- define "gatehouse.caSecretName" -}}
{{- default (printf "%s-ca" (include "gatehouse.fullname" .)) .Values.ca.existingSecret -}}
{{- end -}}

{{- define "gatehouse.edgeXDSSecretName" -}}
{{- default (printf "%s-edge-xds" (include "gatehouse.fullname" .)) .Values.edge.xdsTLS.existingSecret -}}
{{- end -}}

{{- define "gatehouse.redisPasswordDir" -}}/etc/gatehouse-redis{{- end -}}

{{/* The Redis address of store.redis, or "" for mode none. */}}
{{- define "gatehouse.redisAddress" -}}
{{- $r := .Values.redis -}}
{{- if eq $r.mode "external" -}}
{{- required "redis.address is required with redis.mode external (host:port)" $r.address -}}
{{- else if eq $r.mode "internal" -}}
{{- printf "%s:6379" (include "gatehouse.svcFQDN" (list . "redis")) -}}
{{- else if ne $r.mode "none" -}}
{{- fail (printf "redis.mode must be none, external or internal; got %q" $r.mode) -}}
{{- end -}}
{{- end -}}

{{/*
The config file: .Values.config with what the chart owns set on top —
listen addresses from .Values.ports, the policy directory it mounts, the
Services' names as defaults, and the store section from .Values.redis.
*/}}
{{- define "gatehouse.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $_ := set $cfg "listen" (dict
      "authz" (printf "0.0.0.0:%d" (int .Values.ports.authz))
      "xds" (printf "0.0.0.0:%d" (int .Values.ports.xds))
      "admin" (printf "0.0.0.0:%d" (int .Values.ports.admin))) -}}
{{- $authz := default dict $cfg.authz -}}
{{- $pol := default dict $authz.policies -}}
{{- $_ = set $pol "dir" .Values.policiesDir -}}
{{- $_ = set $authz "policies" $pol -}}
{{- $_ = set $cfg "authz" $authz -}}
{{- $mesh := default dict $cfg.mesh -}}
{{- $meshAuthz := default dict $mesh.authz -}}
{{- if not $meshAuthz.address -}}
{{- $_ = set $meshAuthz "address" (printf "%s:%d" (include "gatehouse.svcFQDN" (list . "authz")) (int .Values.ports.authz)) -}}
{{- end -}}
{{- $_ = set $mesh "authz" $meshAuthz -}}
{{- $_ = set $cfg "mesh" $mesh -}}
{{- $xds := default dict $cfg.xds -}}
{{- $tls := default dict $xds.tls -}}
{{- if and $tls.enabled (not $tls.dns_names) -}}
{{- $svc := printf "%s-xds" (include "gatehouse.fullname" .) -}}
{{- $_ = set $tls "dns_names" (list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (include "gatehouse.svcFQDN" (list . "xds"))) -}}
{{- end -}}
{{- $_ = set $xds "tls" $tls -}}
{{- $_ = set $cfg "xds" $xds -}}
{{- $addr := include "gatehouse.redisAddress" . -}}
{{- if $addr -}}
{{- $r := .Values.redis -}}
{{- $redis := dict "address" $addr -}}
{{- with $r.username }}{{ $_ = set $redis "username" . }}{{ end -}}
{{- if $r.existingSecret -}}
{{- $_ = set $redis "password_file" (printf "%s/%s" (include "gatehouse.redisPasswordDir" .) $r.passwordKey) -}}
{{- end -}}
{{- if $r.tls }}{{ $_ = set $redis "tls" true }}{{ end -}}
{{- with $r.keyPrefix }}{{ $_ = set $redis "key_prefix" . }}{{ end -}}
{{- $_ = set $cfg "store" (dict "redis" $redis) -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Policy files: bundled ones (files/policies/*.rego), then .Values.policies.files. */}}
{{- define "gatehouse.policyFiles" -}}
{{- $files := dict -}}
{{- if .Values.policies.bundled -}}
{{- range $path, $_ := .Files.Glob "files/policies/*.rego" -}}
{{- $_ := set $files (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- range $name, $content := .Values.policies.files -}}
{{- if not (regexMatch "^[A-Za-z0-9_.-]+\\.rego$" $name) -}}
{{- fail (printf "policies.files: %q is not a file name ending in .rego" $name) -}}
{{- end -}}
{{- $_ := set $files $name $content -}}
{{- end -}}
{{- if eq (len $files) 0 -}}
{{- fail "no policies: set policies.bundled or policies.files (Gatehouse denies everything without a policy and never becomes ready)" -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* The hardened container securityContext, for uid .uid. */}}
{{- define "gatehouse.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The pod securityContext for uid .uid. fsGroup lets that uid read Secret
volumes (kubelet writes them as root, group fsGroup, mode 0440 whatever
defaultMode says — kubernetes/kubernetes#57923).
*/}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The init container's script: install the CA from the Secret volume into
$CA_DIR with the modes certs.Load demands (key 0600, not group-readable as
the Secret volume is). It refuses to continue without a CA, so a replica
never creates a CA of its own. previous.<serial>.crt/.retire keys become
previous/<serial>.crt/.retire (Secret keys cannot hold "/").
*/}}
{{- define "gatehouse.caInstallScript" -}}
set -eu
for f in ca.crt ca.key; do
  if [ ! -s "$CA_SECRET_DIR/$f" ]; then
    echo "ca-install: $CA_SECRET_DIR/$f is missing or empty: create the CA Secret from 'gatehouse ca init' (see the chart README)" >&2
    exit 1
  fi
done
umask 077
rm -rf "$CA_DIR"
mkdir -p "$CA_DIR"
chmod 0700 "$CA_DIR"
cp "$CA_SECRET_DIR/ca.crt" "$CA_DIR/ca.crt"
chmod 0644 "$CA_DIR/ca.crt"
cp "$CA_SECRET_DIR/ca.key" "$CA_DIR/ca.key"
chmod 0600 "$CA_DIR/ca.key"
for f in "$CA_SECRET_DIR"/previous.*; do
  [ -e "$f" ] || continue
  mkdir -p "$CA_DIR/previous"
  chmod 0700 "$CA_DIR/previous"
  name=${f##*/previous.}
  cp "$f" "$CA_DIR/previous/$name"
  chmod 0644 "$CA_DIR/previous/$name"
done
echo "ca-install: CA installed in $CA_DIR"
{{- end -}}
