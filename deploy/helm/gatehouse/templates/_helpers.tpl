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
app.kubernetes.io/part-of: gatehouse
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Selector labels of one component's pods (gatehouse, edge, redis):
  include "gatehouse.componentSelector" (list . "edge")
*/}}
{{- define "gatehouse.componentSelector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "gatehouse.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
The labels of one component's pod template: its selector plus the
standard labels that do not change with every chart or app version (a
version label on the pod template would restart pods whose image did not
change).
*/}}
{{- define "gatehouse.podLabels" -}}
{{- $ := index . 0 -}}
{{ include "gatehouse.componentSelector" . }}
app.kubernetes.io/part-of: gatehouse
app.kubernetes.io/managed-by: {{ $.Release.Service }}
{{- end -}}

{{/*
An image reference: repository:tag, and @digest when digest is set (the
digest is what runs; the tag stays for humans).
  include "gatehouse.imageRef" (dict "image" .Values.edge.image "default" "")
*/}}
{{- define "gatehouse.imageRef" -}}
{{- $img := .image -}}
{{- $tag := toString (default .default $img.tag) -}}
{{- if not $tag -}}
{{- fail (printf "image %s: a tag is required" $img.repository) -}}
{{- end -}}
{{- $ref := printf "%s:%s" $img.repository $tag -}}
{{- with $img.digest -}}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" .) -}}
{{- fail (printf "image %s: digest must be sha256:<64 hex digits>; got %q" $img.repository .) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref . -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
GOMEMLIMIT for the gatehouse container, in bytes, or "" for none: the Go
runtime does not read the cgroup memory limit, so without it the heap may
grow until the kernel OOM-kills the pod instead of the GC working harder
first. goMemLimit.value wins; otherwise goMemLimit.percent of
resources.limits.memory when that is an integer with an optional binary or
decimal suffix (Ki Mi Gi Ti k M G T); "auto" when it is another quantity
(the Deployment then uses a resourceFieldRef: the limit itself).
*/}}
{{- define "gatehouse.goMemLimit" -}}
{{- $g := default dict .Values.goMemLimit -}}
{{- if or (lt (int $g.percent) 0) (gt (int $g.percent) 100) -}}
{{- fail (printf "goMemLimit.percent must be 0 to 100; got %v" $g.percent) -}}
{{- end -}}
{{- $lim := "" -}}
{{- with .Values.resources -}}{{- with .limits -}}{{- with .memory -}}
{{- $lim = kindIs "float64" . | ternary (int64 . | toString) (toString .) -}}
{{- end -}}{{- end -}}{{- end -}}
{{- if $g.value -}}
{{- $g.value -}}
{{- else if and $lim (gt (int $g.percent) 0) -}}
{{- if regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $lim -}}
{{- $num := regexReplaceAll "^([0-9]+).*$" $lim "${1}" | int64 -}}
{{- $mult := get (dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000) (regexReplaceAll "^[0-9]+" $lim "") | int64 -}}
{{- div (mul $num $mult (int $g.percent)) 100 -}}
{{- else -}}
auto
{{- end -}}
{{- end -}}
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

{{- define "gatehouse.edgeServiceAccountName" -}}
{{- if .Values.edge.serviceAccount.create -}}
{{- default (printf "%s-edge" (include "gatehouse.fullname" .)) .Values.edge.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.edge.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.image" -}}
{{- include "gatehouse.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
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
{{- /* backend: redis is what turns the store on; without it the section is ignored (memory). */ -}}
{{- $store := default dict $cfg.store -}}
{{- $_ = set $store "backend" "redis" -}}
{{- $_ = set $store "redis" (merge $redis (default dict $store.redis)) -}}
{{- $_ = set $cfg "store" $store -}}
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
