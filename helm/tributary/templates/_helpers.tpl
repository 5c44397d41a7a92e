{{/* Names, labels and the values checks every template shares. */}}

{{- define "tributary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-tributary", or the release name when it already says tributary; at most 40 characters, so that suffixes fit in 63. */}}
{{- define "tributary.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tributary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tributary.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tributary.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tributary.controllerKeysSecret" -}}
{{- default (printf "%s-controller-keys" (include "tributary.fullname" .)) .Values.controller.existingSecret -}}
{{- end -}}

{{- define "tributary.gatewayKeysSecret" -}}
{{- default (printf "%s-gateway-keys" (include "tributary.fullname" .)) .Values.gateway.existingSecret -}}
{{- end -}}

{{- define "tributary.testClientKeysSecret" -}}
{{- printf "%s-test-client-keys" (include "tributary.fullname" .) -}}
{{- end -}}

{{/* A pool's key Secret: ctx = (dict "root" $ "pool" $pool). */}}
{{- define "tributary.poolKeysSecret" -}}
{{- default (printf "%s-node-%s-keys" (include "tributary.fullname" .root) .pool.name) .pool.existingSecret -}}
{{- end -}}

{{/* A pool's settings: the pool's own, else nodeAgent's. Returns YAML; use with fromYaml. */}}
{{- define "tributary.poolSettings" -}}
{{- $s := dict -}}
{{- range $key := list "dataplane" "legacyKernel" "extraCapabilities" "seccompProfile" "segmentMiB" "shmSizeLimitMiB" "resources" -}}
{{- /* A pool's own value wins as a whole (false, 0 and [] included); no deep merge. */ -}}
{{- $_ := set $s $key (hasKey $.pool $key | ternary (index $.pool $key) (index $.root.Values.nodeAgent $key)) -}}
{{- end -}}
{{- $_ := set $s "segmentMiB" (int $s.segmentMiB) -}}
{{- if eq (int $s.shmSizeLimitMiB) 0 -}}
{{- $_ := set $s "shmSizeLimitMiB" (add (int $s.segmentMiB) 64) -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{/* The job `helm test` runs: tests.job, else the first by name. */}}
{{- define "tributary.testJob" -}}
{{- if .Values.tests.job -}}
{{- .Values.tests.job -}}
{{- else -}}
{{- first (sortAlpha (keys .Values.jobs)) -}}
{{- end -}}
{{- end -}}

{{/* Cross-key checks the schema cannot express; each failure says what to change. */}}
{{- define "tributary.validate" -}}
{{- if eq (int .Values.gateway.port) (int .Values.nodeAgent.metricsPort) -}}
{{- fail (printf "gateway.port and nodeAgent.metricsPort are both %d; the node agent needs two ports" (int .Values.gateway.port)) -}}
{{- end -}}
{{- if eq (int .Values.controller.controlPort) (int .Values.controller.httpPort) -}}
{{- fail (printf "controller.controlPort and controller.httpPort are both %d" (int .Values.controller.controlPort)) -}}
{{- end -}}
{{- $pools := dict -}}
{{- range .Values.nodePools -}}
{{- if hasKey $pools .name -}}
{{- fail (printf "nodePools: the pool name %q is used twice; each pool needs its own name (it prefixes node ids)" .name) -}}
{{- end -}}
{{- $_ := set $pools .name true -}}
{{- $s := fromYaml (include "tributary.poolSettings" (dict "root" $ "pool" .)) -}}
{{- if gt (int $s.segmentMiB) (int $s.shmSizeLimitMiB) -}}
{{- fail (printf "nodePools %q: segmentMiB %d is larger than the /dev/shm limit shmSizeLimitMiB %d; raise the limit or shrink the segment" .name (int $s.segmentMiB) (int $s.shmSizeLimitMiB)) -}}
{{- end -}}
{{- end -}}
{{- if .Values.tests.enabled -}}
{{- if not .Values.jobs -}}
{{- fail "tests.enabled: `helm test` needs a job; add one under jobs, or set tests.enabled: false" -}}
{{- end -}}
{{- if not (hasKey .Values.jobs (include "tributary.testJob" .)) -}}
{{- fail (printf "tests.job: there is no job %q under jobs" .Values.tests.job) -}}
{{- end -}}
{{- end -}}
{{- range $name, $job := .Values.jobs -}}
{{- if ne (toString (default "" $job.fan_in)) "auto" -}}
{{- range list "fan_in_min" "fan_in_max" "fan_in_tail_ms" -}}
{{- if hasKey $job . -}}
{{- fail (printf "jobs.%s.%s: only with fan_in: auto" $name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (hasKey $job "min_clients") (gt (int $job.min_clients) (int $job.clients_per_round)) -}}
{{- fail (printf "jobs.%s.min_clients %d is more than clients_per_round %d" $name (int $job.min_clients) (int $job.clients_per_round)) -}}
{{- end -}}
{{- if and (hasKey $job "fan_in_min") (hasKey $job "fan_in_max") (gt (int $job.fan_in_min) (int $job.fan_in_max)) -}}
{{- fail (printf "jobs.%s.fan_in_min is more than fan_in_max" $name) -}}
{{- end -}}
{{- if and (hasKey $job "model") (hasKey $job.model "file") (hasKey $job.model "layout") -}}
{{- fail (printf "jobs.%s.model: either file or layout, not both" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The container security settings every container shares (seccomp is set per pod). */}}
{{- define "tributary.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
{{- end -}}
