{{/*
Names: the chart name, and the release-prefixed name every resource gets (63 characters at most).
*/}}
{{- define "sqs-event-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sqs-event-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sqs-event-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sqs-event-worker.labels" -}}
helm.sh/chart: {{ include "sqs-event-worker.chart" . }}
{{ include "sqs-event-worker.instanceLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Every pod of the release: the worker's and the DLQ-reprocessing job's. */}}
{{- define "sqs-event-worker.instanceLabels" -}}
app.kubernetes.io/name: {{ include "sqs-event-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The worker's pods only (the Deployment, its Service, PDB and autoscaler). */}}
{{- define "sqs-event-worker.selectorLabels" -}}
{{ include "sqs-event-worker.instanceLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "sqs-event-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sqs-event-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sqs-event-worker.triggerAuthenticationName" -}}
{{- default (include "sqs-event-worker.fullname" .) .Values.keda.triggerAuthentication.name }}
{{- end }}

{{/* The image: by digest when one is given, else by tag (default: the chart's appVersion). */}}
{{- define "sqs-event-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret loaded with envFrom, if any. */}}
{{- define "sqs-event-worker.secretName" -}}
{{- if .Values.secret.existingSecret }}
{{- .Values.secret.existingSecret }}
{{- else if .Values.secret.create }}
{{- include "sqs-event-worker.fullname" . }}
{{- end }}
{{- end }}

{{/*
AWS region: worker.region, else the one in the queue URL (https://sqs.<region>.amazonaws.com/…).
Empty when neither says.
*/}}
{{- define "sqs-event-worker.region" -}}
{{- if .Values.worker.region }}
{{- .Values.worker.region }}
{{- else }}
{{- $host := regexFind "^https://sqs\\.[a-z0-9-]+\\.amazonaws\\.com" (.Values.worker.queueUrl | default "") }}
{{- $host | trimPrefix "https://sqs." | trimSuffix ".amazonaws.com" }}
{{- end }}
{{- end }}

{{/*
Shutdown budget, in seconds. On SIGTERM the worker stops receiving, gives running handlers
worker.shutdownTimeout to finish, waits up to worker.waitTimeSeconds for open long polls to return
and then flushes its deletes (up to ~5 s). The pod's grace period must outlast all of it, or the
kubelet's SIGKILL cuts work off and its messages come back only after their visibility timeout.
  minimum: shutdownTimeout + waitTimeSeconds + 5 (the worker's own worst case)
  derived: shutdownTimeout + waitTimeSeconds + 15 (10 s more for process exit and slow calls)
*/}}
{{- define "sqs-event-worker.shutdownSeconds" -}}
{{- addf .Values.worker.shutdownTimeout .Values.worker.waitTimeSeconds }}
{{- end }}

{{- define "sqs-event-worker.terminationGracePeriodSeconds" -}}
{{- $shutdown := include "sqs-event-worker.shutdownSeconds" . | float64 }}
{{- $minimum := addf $shutdown 5 }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $explicit := .Values.terminationGracePeriodSeconds }}
{{- if le (float64 $explicit) $minimum }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be larger than worker.shutdownTimeout (%v) + worker.waitTimeSeconds (%v) + 5 = %v: on SIGTERM the worker lets handlers finish for shutdownTimeout, waits for open long polls for up to waitTimeSeconds and then flushes its deletes, and a shorter grace period kills it in the middle. Leave terminationGracePeriodSeconds null to derive it (shutdownTimeout + waitTimeSeconds + 15), or lower worker.shutdownTimeout / worker.waitTimeSeconds." $explicit .Values.worker.shutdownTimeout $.Values.worker.waitTimeSeconds $minimum) }}
{{- end }}
{{- int $explicit }}
{{- else }}
{{- addf $shutdown 15 | ceil | int }}
{{- end }}
{{- end }}

{{/* Messages per pod KEDA aims at: one per handler slot (Lambda handlers take batchSize each). */}}
{{- define "sqs-event-worker.queueLength" -}}
{{- if .Values.keda.queueLength }}
{{- .Values.keda.queueLength | int }}
{{- else }}
{{- $perCall := 1 }}
{{- if eq (toString .Values.worker.handlerType) "lambda" }}
{{- $perCall = .Values.worker.batchSize | default 10 | int }}
{{- end }}
{{- mul (.Values.worker.concurrency | default 10 | int) $perCall }}
{{- end }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express; each fails with what to do. */}}
{{- define "sqs-event-worker.validate" -}}
{{- if and .Values.keda.enabled .Values.hpa.enabled }}
{{- fail "keda.enabled and hpa.enabled are both true: enable one autoscaler only (two controllers would fight over the Deployment's replica count). Use KEDA where it is installed, the HPA otherwise." }}
{{- end }}
{{- if and .Values.secret.existingSecret .Values.secret.create }}
{{- fail "secret.existingSecret and secret.create are both set: use an existing Secret or let the chart create one from secret.env, not both." }}
{{- end }}
{{- if and .Values.keda.enabled (not (include "sqs-event-worker.region" .)) }}
{{- fail "keda.enabled needs the queue's region: set worker.region, or use an AWS queue URL (https://sqs.<region>.amazonaws.com/…)." }}
{{- end }}
{{- if and .Values.keda.enabled (eq .Values.keda.triggerAuthentication.identityOwner "workload") (not .Values.serviceAccount.roleArn) }}
{{- fail "keda.triggerAuthentication.identityOwner is workload, so KEDA assumes the role of the worker's ServiceAccount: set serviceAccount.roleArn." }}
{{- end }}
{{- if and .Values.hpa.enabled .Values.hpa.targetCPUUtilizationPercentage (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "hpa.targetCPUUtilizationPercentage needs resources.requests.cpu: utilisation is measured against the request." }}
{{- end }}
{{- if and .Values.hpa.enabled .Values.hpa.targetMemoryUtilizationPercentage (not (dig "requests" "memory" "" .Values.resources)) }}
{{- fail "hpa.targetMemoryUtilizationPercentage needs resources.requests.memory: utilisation is measured against the request." }}
{{- end }}
{{- if and .Values.hpa.enabled (not .Values.hpa.targetCPUUtilizationPercentage) (not .Values.hpa.targetMemoryUtilizationPercentage) (not .Values.hpa.externalMetric.name) }}
{{- fail "hpa.enabled needs a metric: set hpa.targetCPUUtilizationPercentage, hpa.targetMemoryUtilizationPercentage or hpa.externalMetric.name." }}
{{- end }}
{{- if and .Values.hpa.enabled (gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) }}
{{- fail (printf "hpa.minReplicas (%v) is larger than hpa.maxReplicas (%v)." .Values.hpa.minReplicas .Values.hpa.maxReplicas) }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail (printf "keda.minReplicaCount (%v) is larger than keda.maxReplicaCount (%v)." .Values.keda.minReplicaCount .Values.keda.maxReplicaCount) }}
{{- end }}
{{- if and .Values.cronJob.enabled (not .Values.cronJob.args) (not .Values.cronJob.handler) (not .Values.worker.handler) }}
{{- fail "cronJob.enabled needs a handler for the DLQ's messages: set cronJob.handler (or worker.handler), or give the whole command in cronJob.args." }}
{{- end }}
{{- $_ := include "sqs-event-worker.terminationGracePeriodSeconds" . }}
{{- end }}

{{/*
The worker's settings as WORKER_* variables: every non-empty key of .Values.worker except the
ones rendered separately (region becomes AWS_REGION). camelCase keys become WORKER_SNAKE_CASE.
*/}}
{{- define "sqs-event-worker.workerEnv" -}}
{{- range $key, $value := omit .Values.worker "region" }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
{{ printf "WORKER_%s" ($key | snakecase | upper) }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- with include "sqs-event-worker.region" . }}
AWS_REGION: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The pod-level settings the Deployment and the CronJob share. */}}
{{- define "sqs-event-worker.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "sqs-event-worker.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- /* No WORKER_SERVICE_HOST, WORKER_PORT_8080_TCP, … for a Service named `worker`: the worker
reads WORKER_* as settings, and the pods find Services through DNS. */}}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "sqs-event-worker.terminationGracePeriodSeconds" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      {{- with .Values.tmpSizeLimit }}
      sizeLimit: {{ . }}
      {{- end }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The container's environment sources, shared by the Deployment and the CronJob. */}}
{{- define "sqs-event-worker.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "sqs-event-worker.fullname" . }}
  {{- with include "sqs-event-worker.secretName" . }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- with .Values.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "sqs-event-worker.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "sqs-event-worker.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and .Values.secret.create (not .Values.secret.existingSecret) }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}
