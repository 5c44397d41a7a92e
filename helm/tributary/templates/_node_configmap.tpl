{{/* One pool's node.yaml ConfigMap: ctx = (dict "root" $ "pool" $pool). */}}
{{- define "tributary.nodeConfigMap" -}}
{{- $root := .root -}}
{{- $pool := .pool -}}
{{- $fullname := include "tributary.fullname" $root -}}
{{- $s := fromYaml (include "tributary.poolSettings" (dict "root" $root "pool" $pool)) -}}
{{- $a := $root.Values.nodeAgent.autoscale -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $fullname }}-node-{{ $pool.name }}
  labels:
    {{- include "tributary.labels" $root | nindent 4 }}
    app.kubernetes.io/component: node
    tributary.dev/pool: {{ $pool.name }}
data:
  node.yaml: |
    # Rendered by the Helm chart from values.yaml (nodeAgent.*, nodePools).
    # node_id and gateway_advertise come from the command line, per pod:
    # --node-id {{ $pool.name }}.<node name> --gateway-advertise tcp://<address>:{{ $root.Values.gateway.port }}
    store: {segment_bytes: {{ int $s.segmentMiB }}MiB, max_blocks: {{ $root.Values.nodeAgent.maxBlocks }}}
    gateway_bind: tcp://*:{{ $root.Values.gateway.port }}
    dataplane: {{ $s.dataplane }}
    keep_alive_ms: {{ $root.Values.nodeAgent.keepAliveMs }}
    function_liveness_ms: {{ $root.Values.nodeAgent.functionLivenessMs }}
    autoscale:
      enabled: {{ $a.enabled }}
      stable_window_s: {{ $a.stableWindowS }}
      panic_window_s: {{ $a.panicWindowS }}
      panic_threshold: {{ $a.panicThreshold }}
      max_scale_up_rate: {{ $a.maxScaleUpRate }}
      max_scale_down_rate: {{ $a.maxScaleDownRate }}
      target_utilization: {{ $a.targetUtilization }}
      scale_to_zero_grace_s: {{ $a.scaleToZeroGraceS }}
      max_functions: {{ $a.maxFunctions }}
    metrics_bind: 0.0.0.0:{{ $root.Values.nodeAgent.metricsPort }}
    aggregation_transport: {{ $root.Values.nodeAgent.aggregationTransport }}
    controller: tcp://{{ $fullname }}-controller:{{ $root.Values.controller.controlPort }}
    {{- if $root.Values.curve.enabled }}
    gateway_security:
      mode: curve
      secret_key_file: /etc/tributary/keys/gateway/gateway.key
      allow_list: /etc/tributary/clients
    controller_security:
      mode: curve
      controller_public_key_file: /etc/tributary/keys/controller/controller.pub
      secret_key_file: /etc/tributary/keys/node/node.key
    {{- else }}
    gateway_security: {mode: none}
    controller_security: {mode: none}
    {{- end }}
{{- end -}}
