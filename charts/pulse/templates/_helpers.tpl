{{/*
Names and labels. Every object carries the app.kubernetes.io labels and helm.sh/chart;
selectors use name + instance + component only (they are immutable on Deployments).
*/}}

{{- define "pulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pulse.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if .Values.instance }}
{{- .Values.instance | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of one component's objects: (dict "root" $ "component" "ingest") */}}
{{- define "pulse.componentName" -}}
{{- printf "%s-%s" (include "pulse.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pulse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: (dict "root" $ "component" "ingest") */}}
{{- define "pulse.labels" -}}
helm.sh/chart: {{ include "pulse.chart" .root }}
{{ include "pulse.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: pulse
{{- end }}

{{/*
The Pulse installation an object belongs to: the release name, or .Values.instance when one
Pulse is split across releases (every release of it sets the same instance, so the shared
ConfigMap, Secrets and selectors line up).
*/}}
{{- define "pulse.instance" -}}
{{- default .Release.Name .Values.instance | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: (dict "root" $ "component" "ingest") */}}
{{- define "pulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pulse.name" .root }}
app.kubernetes.io/instance: {{ include "pulse.instance" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
"true" when this release renders the service: it is enabled and in scope.services ("*" is
every service). (dict "root" $ "name" "ingest" "svc" <service values>)
*/}}
{{- define "pulse.renders" -}}
{{- $only := .root.Values.scope.services }}
{{- if and .svc.enabled (or (has "*" $only) (has .name $only)) }}true{{ end }}
{{- end }}

{{/* "true" when this release renders the objects the services share (scope.shared). */}}
{{- define "pulse.rendersShared" -}}
{{- if .Values.scope.shared }}true{{ end }}
{{- end }}

{{/*
One service's settings: its entry in .Values.services merged over .Values.defaults.
(dict "root" $ "name" "ingest") -> YAML; use with fromYaml.
*/}}
{{- define "pulse.serviceValues" -}}
{{- $raw := index .root.Values.services .name | default dict }}
{{- $merged := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy $raw) }}
{{- /* mergeOverwrite skips zero values: honour an explicit 0 / false from the service. */}}
{{- range $key := list "replicas" "enabled" "jwtSecret" "accessControl" "preStopSleepSeconds" }}
{{- if hasKey $raw $key }}{{- $_ := set $merged $key (index $raw $key) }}{{- end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{- define "pulse.image" -}}
{{- $registry := .root.Values.global.imageRegistry }}
{{- $repo := required (printf "services.%s.image.repository is required" .name) .image.repository }}
{{- $ref := ternary (printf "%s/%s" (trimSuffix "/" $registry) $repo) $repo (ne $registry "") }}
{{- if .image.digest }}
{{- printf "%s@%s" $ref .image.digest }}
{{- else }}
{{- printf "%s:%s" $ref (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* AWS_ENDPOINT_URL: the configured one, else the in-cluster LocalStack when enabled. */}}
{{- define "pulse.awsEndpointUrl" -}}
{{- if .Values.aws.endpointUrl }}
{{- .Values.aws.endpointUrl }}
{{- else if .Values.devDependencies.localstack.enabled }}
{{- printf "http://%s:4566" (include "pulse.componentName" (dict "root" . "component" "localstack")) }}
{{- end }}
{{- end }}

{{/* REDIS_URL: the configured one, else the in-cluster Redis when enabled. */}}
{{- define "pulse.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.devDependencies.redis.enabled }}
{{- printf "redis://%s:6379/0" (include "pulse.componentName" (dict "root" . "component" "redis")) }}
{{- end }}
{{- end }}

{{/*
The shared ConfigMap's data. A helper of its own so every release of a split install computes
the pods' checksum/config from it, including those that do not render the ConfigMap.
*/}}
{{- define "pulse.configData" -}}
AWS_REGION: {{ .Values.aws.region | quote }}
{{- with include "pulse.awsEndpointUrl" . }}
AWS_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- if not .Values.redis.existingSecret }}
REDIS_URL: {{ required "redis.url is required (or redis.existingSecret, or devDependencies.redis.enabled)" (include "pulse.redisUrl" .) | quote }}
{{- end }}
PULSE_RESOURCE_PREFIX: {{ .Values.aws.resourcePrefix | quote }}
PULSE_REDIS_PREFIX: {{ .Values.redis.prefix | quote }}
PULSE_REDIS_MODE: {{ .Values.redis.mode | quote }}
{{- if eq .Values.redis.mode "sentinel" }}
PULSE_REDIS_SENTINELS: {{ join "," .Values.redis.sentinels | quote }}
PULSE_REDIS_MASTER_NAME: {{ .Values.redis.masterName | quote }}
{{- end }}
{{- if .Values.redis.tls.caSecret }}
PULSE_REDIS_TLS_CA_FILE: {{ include "pulse.redisCaFile" . | quote }}
{{- end }}
PULSE_REDIS_WAIT_REPLICAS: {{ .Values.redis.waitReplicas | quote }}
PULSE_REDIS_WAIT_TIMEOUT_MS: {{ .Values.redis.waitTimeoutMs | quote }}
PULSE_CHANNEL_GUARD_TTL_SECONDS: {{ .Values.redis.channelGuardTtlSeconds | quote }}
{{- with .Values.redis.history }}
PULSE_HISTORY: {{ toJson . | quote }}
{{- end }}
PULSE_LOG_LEVEL: {{ .Values.logging.level | quote }}
PULSE_LOG_FORMAT: {{ .Values.logging.format | quote }}
PULSE_HEALTH_INTERVAL_SECONDS: {{ include "pulse.number" .Values.health.intervalSeconds | quote }}
{{- end }}

{{/* A number as plain text: whole numbers without a fraction or an exponent (1e+06). */}}
{{- define "pulse.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/*
How a service verifies bearer tokens (pulse.settings.CredentialSettings): the secret from its
Secret, the one algorithm, the identity provider's JWKS. (root context) -> env list items
*/}}
{{- define "pulse.credentialEnv" -}}
- name: PULSE_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "pulse.jwtSecretName" . }}
      key: {{ .Values.auth.existingSecretKey }}
- name: PULSE_JWT_ALGORITHM
  value: {{ .Values.auth.jwtAlgorithm | quote }}
{{- with .Values.auth.jwksUrl }}
- name: PULSE_JWKS_URL
  value: {{ . | quote }}
{{- end }}
- name: PULSE_JWKS_CACHE_SECONDS
  value: {{ int .Values.auth.jwksCacheSeconds | quote }}
{{- with .Values.auth.jwtIssuer }}
- name: PULSE_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwtAudience }}
- name: PULSE_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The door of ingest's API (ingest.access): API keys' cache, the principals' budget, the
failed-credential limit per address and the proxies trusted to name it. -> env list items
*/}}
{{- define "pulse.accessControlEnv" -}}
- name: PULSE_API_KEY_CACHE_SECONDS
  value: {{ include "pulse.number" .Values.auth.apiKeyCacheSeconds | quote }}
- name: PULSE_RATE_LIMIT_PER_SECOND
  value: {{ include "pulse.number" .Values.rateLimit.perSecond | quote }}
- name: PULSE_RATE_LIMIT_BURST
  value: {{ int .Values.rateLimit.burst | quote }}
- name: PULSE_AUTH_FAILURES_PER_MINUTE
  value: {{ int .Values.rateLimit.authFailuresPerMinute | quote }}
- name: PULSE_TRUSTED_PROXY_HOPS
  value: {{ int .Values.rateLimit.trustedProxyHops | quote }}
{{- end }}

{{- define "pulse.jwtSecretName" -}}
{{- default (printf "%s-auth" (include "pulse.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "pulse.awsSecretName" -}}
{{- printf "%s-aws" (include "pulse.fullname" .) }}
{{- end }}

{{- define "pulse.hasAwsCredentials" -}}
{{- if and .Values.aws.credentials.accessKeyId .Values.aws.credentials.secretAccessKey }}true{{ end }}
{{- end }}

{{/*
Environment shared by every Pulse container (services and the topology Job):
the common ConfigMap, REDIS_URL and the emulator's static keys when set.
(dict "root" $) -> envFrom list items
*/}}
{{- define "pulse.envFrom" -}}
- configMapRef:
    name: {{ include "pulse.fullname" .root }}-env
{{- with .root.Values.pipeline.outputsConfigMap }}
{{- /* after pulse-env, so the pipeline's PULSE_RESOURCE_PREFIX wins; optional until the operator wrote it */}}
- configMapRef:
    name: {{ . }}
    optional: true
{{- end }}
{{- if include "pulse.hasAwsCredentials" .root }}
- secretRef:
    name: {{ include "pulse.awsSecretName" .root }}
{{- end }}
{{- end }}

{{- define "pulse.redisEnv" -}}
{{- if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- if and (eq .Values.redis.mode "sentinel") .Values.redis.sentinelPasswordSecret }}
- name: PULSE_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.sentinelPasswordSecret }}
      key: {{ .Values.redis.sentinelPasswordSecretKey }}
{{- end }}
{{- end }}

{{/* Where the Redis CA certificate (redis.tls.caSecret) is mounted, and the file in it. */}}
{{- define "pulse.redisCaDir" -}}/etc/pulse/redis-ca{{- end }}
{{- define "pulse.redisCaFile" -}}{{ include "pulse.redisCaDir" . }}/ca.crt{{- end }}

{{/*
The Redis CA certificate's volume and mount, when redis.tls.caSecret is set: every container
that reads the settings needs the file PULSE_REDIS_TLS_CA_FILE names. (root context)
*/}}
{{- define "pulse.redisCaVolumeMounts" -}}
{{- if .Values.redis.tls.caSecret }}
- name: redis-ca
  mountPath: {{ include "pulse.redisCaDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "pulse.redisCaVolumes" -}}
{{- if .Values.redis.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.tls.caSecret }}
    items:
      - key: {{ .Values.redis.tls.caSecretKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/*
A service's ports: (service values) -> YAML {named: {name: number}, ops: <name of the port
serving /metrics, /healthz, /readyz>, separate: <PULSE_OPS_PORT is set>}; use with fromYaml.
  public, opsPort != port   http (the API) and ops (internal)      ingest, ws-gateway
  public, opsPort == port   http, which also serves the ops routes  (an API not split yet)
  not public                ops only (PULSE_HTTP_PORT serves nothing else)   the workers
*/}}
{{- define "pulse.ports" -}}
{{- $port := int .port }}
{{- $separate := and .public (ne $port (int .opsPort)) }}
named:
  {{- if .public }}
  http: {{ $port }}
  {{- end }}
  {{- if $separate }}
  ops: {{ int .opsPort }}
  {{- else if not .public }}
  ops: {{ $port }}
  {{- end }}
ops: {{ ternary "http" "ops" (and .public (not $separate)) }}
separate: {{ $separate }}
{{- end }}

{{/* "true" when an HPA or a KEDA ScaledObject owns the replica count: (service values) */}}
{{- define "pulse.autoscaled" -}}
{{- if or $.autoscaling.enabled $.keda.enabled }}true{{ end }}
{{- end }}

{{/* The fewest replicas the service runs: (service values) */}}
{{- define "pulse.minReplicas" -}}
{{- if .autoscaling.enabled }}{{ int .autoscaling.minReplicas }}
{{- else if .keda.enabled }}{{ int .keda.minReplicas }}
{{- else }}{{ int .replicas }}{{ end }}
{{- end }}

{{/*
Fail the render when a feature needs CRDs the cluster does not serve: a silent drop is worse.
(dict "root" $ "api" "monitoring.coreos.com/v1/ServiceMonitor" "feature" "monitoring.enabled")
*/}}
{{- define "pulse.requireApi" -}}
{{- if not (.root.Capabilities.APIVersions.Has .api) }}
{{- fail (printf "%s is on, but the cluster does not serve %s: install its CRDs first (helm template: --api-versions %s)" .feature .api .api) }}
{{- end }}
{{- end }}

{{/*
The workload of one service: ServiceAccount, Service, Deployment and, with more than one
replica, a PodDisruptionBudget. (dict "root" $ "name" "ingest")
*/}}
{{- define "pulse.workload" -}}
{{- $root := .root }}
{{- $name := .name }}
{{- $svc := include "pulse.serviceValues" . | fromYaml }}
{{- $ctx := dict "root" $root "component" $name }}
{{- $fullName := include "pulse.componentName" $ctx }}
{{- $port := int $svc.port }}
{{- $ports := include "pulse.ports" $svc | fromYaml }}
{{- if include "pulse.renders" (dict "root" $root "name" $name "svc" $svc) }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "pulse.labels" $ctx | nindent 4 }}
  {{- with $svc.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "pulse.labels" $ctx | nindent 4 }}
  {{- with $svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.service.type }}
  selector:
    {{- include "pulse.selectorLabels" $ctx | nindent 4 }}
  ports:
    {{- /* the ServiceMonitor scrapes through the Service, by the ops port's name */}}
    {{- range $portName, $number := $ports.named }}
    - name: {{ $portName }}
      port: {{ $number }}
      targetPort: {{ $portName }}
      protocol: TCP
      {{- if and (eq $portName "http") (eq $svc.service.type "NodePort") $svc.service.nodePort }}
      nodePort: {{ int $svc.service.nodePort }}
      {{- end }}
    {{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "pulse.labels" $ctx | nindent 4 }}
spec:
  {{- if not (include "pulse.autoscaled" $svc) }}
  replicas: {{ int $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "pulse.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pulse.labels" $ctx | nindent 8 }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "pulse.configData" $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $fullName }}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: {{ int $svc.terminationGracePeriodSeconds }}
      {{- with $root.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ kindIs "string" . | ternary . (get . "name") }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml $svc.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $name }}
          image: {{ include "pulse.image" (dict "root" $root "name" $name "image" $svc.image) }}
          imagePullPolicy: {{ $svc.image.pullPolicy }}
          ports:
            {{- range $portName, $number := $ports.named }}
            - name: {{ $portName }}
              containerPort: {{ $number }}
              protocol: TCP
            {{- end }}
          envFrom:
            {{- include "pulse.envFrom" (dict "root" $root) | nindent 12 }}
          env:
            - name: PULSE_SERVICE_NAME
              value: {{ $name | quote }}
            - name: PULSE_HTTP_PORT
              value: {{ $port | quote }}
            {{- if $ports.separate }}
            - name: PULSE_OPS_PORT
              value: {{ $svc.opsPort | quote }}
            {{- end }}
            {{- range $key := keys $svc.fieldEnv | sortAlpha }}
            - name: {{ $key }}
              valueFrom:
                fieldRef:
                  fieldPath: {{ index $svc.fieldEnv $key }}
            {{- end }}
            {{- with include "pulse.redisEnv" $root }}{{ . | nindent 12 }}{{ end }}
            {{- if $svc.jwtSecret }}
            {{- include "pulse.credentialEnv" $root | nindent 12 }}
            {{- end }}
            {{- if $svc.accessControl }}
            {{- include "pulse.accessControlEnv" $root | nindent 12 }}
            {{- end }}
            {{- range $key := keys $svc.env | sortAlpha }}
            - name: {{ $key }}
              value: {{ index $svc.env $key | quote }}
            {{- end }}
          {{- range $kind := list "liveness" "readiness" "startup" }}
          {{- $probe := index $svc.probes $kind }}
          {{- if $probe.enabled }}
          {{ $kind }}Probe:
            httpGet:
              path: {{ $probe.path }}
              port: {{ $ports.ops }}
            initialDelaySeconds: {{ int $probe.initialDelaySeconds }}
            periodSeconds: {{ int $probe.periodSeconds }}
            timeoutSeconds: {{ int $probe.timeoutSeconds }}
            failureThreshold: {{ int $probe.failureThreshold }}
          {{- end }}
          {{- end }}
          {{- if gt (int $svc.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ int $svc.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- toYaml $svc.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with include "pulse.redisCaVolumeMounts" $root }}{{ . | nindent 12 }}{{ end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $svc.tmpSizeLimit }}
        {{- with include "pulse.redisCaVolumes" $root }}{{ . | nindent 8 }}{{ end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if $svc.ingress.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "pulse.labels" $ctx | nindent 4 }}
  {{- with $svc.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $svc.ingress.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- if $svc.ingress.tlsSecretName }}
  tls:
    - hosts: [{{ required (printf "services.%s.ingress.host is required with TLS" $name) $svc.ingress.host | quote }}]
      secretName: {{ $svc.ingress.tlsSecretName }}
  {{- end }}
  rules:
    - {{ with $svc.ingress.host }}host: {{ . | quote }}
      {{ end }}http:
        paths:
          - path: {{ $svc.ingress.path }}
            pathType: Prefix
            backend:
              service:
                name: {{ $fullName }}
                port:
                  name: http
{{- end }}
{{- if gt (int (include "pulse.minReplicas" $svc)) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "pulse.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "pulse.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
