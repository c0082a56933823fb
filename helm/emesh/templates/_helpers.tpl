{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "emesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "emesh.fullname" -}}
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

{{- define "emesh.coordinator.fullname" -}}{{ include "emesh.fullname" . }}-coordinator{{- end -}}
{{- define "emesh.worker.fullname" -}}{{ include "emesh.fullname" . }}-worker{{- end -}}
{{- define "emesh.etcd.fullname" -}}{{ include "emesh.fullname" . }}-etcd{{- end -}}
{{- define "emesh.layout.fullname" -}}{{ include "emesh.fullname" . }}-layout{{- end -}}

{{- define "emesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "emesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: emesh
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "worker") */}}
{{- define "emesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emesh.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "emesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Layout ------------------------------------------------------------------------------ */}}

{{/* Refuses values the runtime cannot serve, with the reason. Included by every template. */}}
{{- define "emesh.validate" -}}
{{- $l := .Values.layout -}}
{{- $w := .Values.worker -}}
{{- if or (lt (int $l.workers) 1) (lt (int $l.tp) 1) -}}
{{- fail (printf "layout.workers (%v) and layout.tp (%v) must both be at least 1" $l.workers $l.tp) -}}
{{- end -}}
{{- if ne (mod (int $l.workers) (int $l.tp)) 0 -}}
{{- fail (printf "layout.workers (%v) is not a multiple of layout.tp (%v): the coordinator splits the workers into attention groups of tp ranks" $l.workers $l.tp) -}}
{{- end -}}
{{- if lt (int $w.ranksPerPod) 1 -}}
{{- fail (printf "worker.ranksPerPod (%v) must be at least 1" $w.ranksPerPod) -}}
{{- end -}}
{{- if ne (mod (int $l.workers) (int $w.ranksPerPod)) 0 -}}
{{- fail (printf "layout.workers (%v) is not a multiple of worker.ranksPerPod (%v): every worker pod runs the same number of ranks" $l.workers $w.ranksPerPod) -}}
{{- end -}}
{{- if and (gt (int .Values.coordinator.replicas) 1) (not .Values.etcd.enabled) -}}
{{- fail (printf "coordinator.replicas is %v but etcd.enabled is false: standby coordinators need etcd for the leader election (set coordinator.replicas=1 or enable etcd)" .Values.coordinator.replicas) -}}
{{- end -}}
{{- if and .Values.etcd.enabled (not .Values.etcd.endpoints) (eq (mod (int .Values.etcd.replicas) 2) 0) -}}
{{- fail (printf "etcd.replicas (%v) must be odd (1, 3 or 5) for a quorum" .Values.etcd.replicas) -}}
{{- end -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled (not .Values.etcd.tls.existingSecret) -}}
{{- fail "etcd.tls.enabled needs etcd.tls.existingSecret (a secret with ca.crt, tls.crt, tls.key)" -}}
{{- end -}}
{{- if and .Values.etcd.enabled .Values.etcd.auth.username (not .Values.etcd.auth.existingSecret) -}}
{{- fail "etcd.auth.username needs etcd.auth.existingSecret (the secret holding the password)" -}}
{{- end -}}
{{- if and (eq .Values.model.source.type "objectStorage") (not .Values.model.source.objectStorage.uri) -}}
{{- fail "model.source.type=objectStorage needs model.source.objectStorage.uri (an rclone source such as s3:bucket/deepseek-v4-pro)" -}}
{{- end -}}
{{- if and (eq .Values.model.source.type "pvc") (not .Values.model.source.pvc.create) (not .Values.model.source.pvc.claimName) -}}
{{- fail "model.source.type=pvc needs model.source.pvc.claimName (an existing claim) or model.source.pvc.create=true" -}}
{{- end -}}
{{- if and (gt (int $l.tp) 1) (gt (int $w.ranksPerPod) 1) (ne (mod (int $w.ranksPerPod) (int $l.tp)) 0) -}}
{{- fail (printf "worker.ranksPerPod (%v) is not a multiple of layout.tp (%v): an attention group (ranks r with the same r / tp) would span two worker pods, i.e. two nodes" $w.ranksPerPod $l.tp) -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.coordinator.http.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs coordinator.http.enabled (/metrics is served by the HTTP API)" -}}
{{- end -}}
{{- if and .Values.worker.hostNetwork (gt (int .Values.worker.ranksPerPod) 1) (ne .Values.worker.antiAffinity "hard") -}}
{{- fail "worker.hostNetwork with several ranks per pod needs worker.antiAffinity=hard (two worker pods on one node would bind the same ports)" -}}
{{- end -}}
{{- end -}}

{{- define "emesh.workerPods" -}}
{{- div (int .Values.layout.workers) (int .Values.worker.ranksPerPod) -}}
{{- end -}}

{{- define "emesh.modelDir" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) .Values.model.name -}}
{{- end -}}

{{/* The worker addresses in rank order: rank = ordinal * ranksPerPod + container index. */}}
{{- define "emesh.workerAddrs" -}}
{{- $sts := include "emesh.worker.fullname" . -}}
{{- $pods := int (include "emesh.workerPods" .) -}}
{{- $addrs := list -}}
{{- range $ord := until $pods -}}
{{- range $i := until (int $.Values.worker.ranksPerPod) -}}
{{- $addrs = append $addrs (printf "%s-%d.%s.%s.svc.%s:%d" $sts $ord $sts $.Release.Namespace $.Values.clusterDomain (add (int $.Values.worker.port) $i)) -}}
{{- end -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* etcd ------------------------------------------------------------------------------- */}}

{{- define "emesh.etcd.inChart" -}}
{{- if and .Values.etcd.enabled (not .Values.etcd.endpoints) -}}true{{- end -}}
{{- end -}}

{{- define "emesh.etcd.scheme" -}}
{{- if .Values.etcd.tls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{- define "emesh.etcd.memberHost" -}}
{{- $svc := include "emesh.etcd.fullname" .ctx -}}
{{- printf "%s-%v.%s.%s.svc.%s" $svc .i $svc .ctx.Release.Namespace .ctx.Values.clusterDomain -}}
{{- end -}}

{{- define "emesh.etcd.endpoints" -}}
{{- if .Values.etcd.endpoints -}}
{{- join "," .Values.etcd.endpoints -}}
{{- else -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s://%s:%d" (include "emesh.etcd.scheme" $) (include "emesh.etcd.memberHost" (dict "ctx" $ "i" $i)) (int $.Values.etcd.clientPort)) -}}
{{- end -}}
{{- join "," $eps -}}
{{- end -}}
{{- end -}}

{{- define "emesh.etcd.prefix" -}}
{{- default (printf "/emesh/%s/" .Release.Name) .Values.etcd.prefix -}}
{{- end -}}

{{/* Flags that point a coordinator or worker at etcd (runtime: etcd store). */}}
{{- define "emesh.etcd.args" -}}
{{- if .Values.etcd.enabled }}
- --etcd-endpoints
- {{ include "emesh.etcd.endpoints" . | quote }}
- --etcd-prefix
- {{ include "emesh.etcd.prefix" . | quote }}
{{- if .Values.etcd.tls.enabled }}
- --etcd-cacert
- /etc/emesh/etcd-tls/ca.crt
- --etcd-cert
- /etc/emesh/etcd-tls/tls.crt
- --etcd-key
- /etc/emesh/etcd-tls/tls.key
{{- end }}
{{- if .Values.etcd.auth.username }}
- --etcd-user
- {{ .Values.etcd.auth.username | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "emesh.etcd.env" -}}
{{- if and .Values.etcd.enabled .Values.etcd.auth.username }}
- name: EMESH_ETCD_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.etcd.auth.existingSecret }}
      key: {{ .Values.etcd.auth.passwordKey }}
{{- end }}
{{- end -}}

{{- define "emesh.etcd.volumeMounts" -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled }}
- name: etcd-tls
  mountPath: /etc/emesh/etcd-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "emesh.etcd.volumes" -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled }}
- name: etcd-tls
  secret:
    secretName: {{ .Values.etcd.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Model volume ----------------------------------------------------------------------- */}}

{{/* The `model` and `tmp` volumes: (dict "ctx" $ "role" "coordinator"|"worker"). Coordinators
     read only config.json and the tokenizer, so with objectStorage they copy just the JSON files
     into an emptyDir; workers share one node-local copy of the whole checkpoint. */}}
{{- define "emesh.model.volume" -}}
{{- $v := .ctx.Values -}}
{{- $s := $v.model.source -}}
- name: model
{{- if eq $s.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ if $s.pvc.create }}{{ include "emesh.fullname" .ctx }}-model{{ else }}{{ $s.pvc.claimName }}{{ end }}
    readOnly: true
{{- else if eq $s.type "hostPath" }}
  hostPath:
    path: {{ $s.hostPath.path }}
    type: Directory
{{- else if and (eq $s.type "objectStorage") (eq .role "worker") }}
  hostPath:
    path: {{ $s.objectStorage.cachePath }}
    type: DirectoryOrCreate
{{- else }}
  emptyDir: {}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "emesh.model.volumeMount" -}}
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* Init containers that put the checkpoint in place (objectStorage, generate):
     (dict "ctx" $ "role" "coordinator"|"worker"). */}}
{{- define "emesh.model.initContainers" -}}
{{- $ctx := .ctx -}}
{{- $v := .ctx.Values -}}
{{- $s := $v.model.source -}}
{{- $dir := include "emesh.modelDir" $ctx -}}
{{- if eq $s.type "objectStorage" }}
{{- $lock := printf "%s/.%s.lock" (trimSuffix "/" $v.model.mountPath) $v.model.name }}
- name: fetch-model
  image: {{ $s.objectStorage.image }}
  imagePullPolicy: IfNotPresent
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -eu
      dest={{ $dir | quote }}
      [ -f "$dest/.emesh-complete" ] && { echo "checkpoint already at $dest"; exit 0; }
      {{- if eq .role "coordinator" }}
      # The coordinator reads config.json and the tokenizer only.
      rclone copy {{ $s.objectStorage.uri | quote }} "$dest" --include "*.json" {{ join " " $s.objectStorage.extraArgs }}
      {{- else }}
      # One copy per node even when several worker pods share the cache: mkdir is atomic.
      until mkdir {{ $lock | quote }} 2>/dev/null; do
        [ -f "$dest/.emesh-complete" ] && exit 0
        echo "another pod is copying the checkpoint on this node; waiting"; sleep 15
      done
      trap 'rmdir {{ $lock | quote }}' EXIT
      [ -f "$dest/.emesh-complete" ] && exit 0
      rclone copy {{ $s.objectStorage.uri | quote }} "$dest" {{ join " " $s.objectStorage.extraArgs }}
      {{- end }}
      touch "$dest/.emesh-complete"
  env:
    # rclone keeps its cache and config under $HOME; the root filesystem is read-only.
    - name: HOME
      value: /tmp
    {{- with $s.objectStorage.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $s.objectStorage.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $s.objectStorage.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ $v.model.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- else if eq $s.type "generate" }}
- name: generate-model
  image: {{ include "emesh.image" $ctx }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      set -eu
      [ -f {{ $dir | quote }}/config.json ] && exit 0
      exec emesh gen-model --preset {{ $s.generate.preset }} --seed {{ $s.generate.seed }} --dtype {{ $s.generate.dtype }} --out {{ $dir | quote }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: {{ $v.model.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end -}}
