{{/* Names and labels shared by every template. */}}

{{- define "kafka-autopilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka-autopilot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "kafka-autopilot.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "kafka-autopilot.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The leader-election Lease: one per release, so two releases in one namespace never compete. */}}
{{- define "kafka-autopilot.leaseName" -}}
{{- default (include "kafka-autopilot.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "kafka-autopilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-autopilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kafka-autopilot.labels" -}}
{{ include "kafka-autopilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kafka-autopilot
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kafka-autopilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kafka-autopilot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kafka-autopilot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "kafka-autopilot.kafkaNamespace" -}}
{{- default .Release.Namespace .Values.sidecar.kafkaNamespace -}}
{{- end -}}

{{/* A security context from values: `openshift: true` leaves out the fixed ids (runAsUser, runAsGroup,
fsGroup), which OpenShift's restricted-v2 SCC assigns itself. */}}
{{- define "kafka-autopilot.securityContext" -}}
{{- $context := deepCopy .context -}}
{{- if .root.Values.openshift -}}
{{- $context = omit $context "runAsUser" "runAsGroup" "fsGroup" -}}
{{- end -}}
{{- toYaml $context -}}
{{- end -}}

{{/* The agent container's securityContext: by default the Pod Security "restricted" profile, plus a read-only root. */}}
{{- define "kafka-autopilot.containerSecurityContext" -}}
{{- include "kafka-autopilot.securityContext" (dict "root" . "context" .Values.securityContext) -}}
{{- end -}}

{{/* `kafka-autopilot run` arguments common to service and sidecar mode. */}}
{{- define "kafka-autopilot.runArgs" -}}
- run
- --rules=/etc/kafka-autopilot/rules
{{- if .Values.rules.fromCluster }}
- --cluster-rules
{{- end }}
{{- if include "kafka-autopilot.policy" . }}
- --policy=/etc/kafka-autopilot/policy/policy.yaml
{{- end }}
- --prometheus={{ required "prometheus.url is required" .Values.prometheus.url }}
{{- with .Values.prometheus.tenant }}
- --prometheus-tenant={{ . }}
{{- end }}
{{- if .Values.prometheus.bearerTokenSecret.name }}
- --prometheus-bearer-token-file=/etc/kafka-autopilot/prometheus-token/{{ .Values.prometheus.bearerTokenSecret.key }}
{{- end }}
{{- if .Values.prometheus.caSecret.name }}
- --prometheus-ca-file=/etc/kafka-autopilot/prometheus-ca/{{ .Values.prometheus.caSecret.key }}
{{- end }}
{{- if .Values.prometheus.insecureSkipVerify }}
- --prometheus-insecure-skip-verify
{{- end }}
{{- with .Values.kafka.bootstrap }}
- --kafka={{ . }}
- --kafka-security-protocol={{ $.Values.kafka.securityProtocol }}
{{- with $.Values.kafka.sasl.mechanism }}
- --kafka-sasl-mechanism={{ . }}
{{- end }}
{{- with $.Values.kafka.sasl.username }}
- --kafka-sasl-username={{ . }}
{{- end }}
{{- if $.Values.kafka.sasl.passwordSecret.name }}
- --kafka-sasl-password-file=/etc/kafka-autopilot/kafka-sasl/{{ $.Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- if and (or $.Values.kafka.tls.caSecret.name $.Values.kafka.tls.clientSecret.name) (not (has $.Values.kafka.securityProtocol (list "SSL" "SASL_SSL"))) }}
{{- fail (printf "kafka.tls.caSecret and kafka.tls.clientSecret need kafka.securityProtocol SSL or SASL_SSL, not %s" $.Values.kafka.securityProtocol) }}
{{- end }}
{{- if $.Values.kafka.tls.caSecret.name }}
- --kafka-ca-file=/etc/kafka-autopilot/kafka-ca/{{ $.Values.kafka.tls.caSecret.key }}
{{- end }}
{{- with $.Values.kafka.tls.clientSecret }}
{{- if .name }}
- --kafka-cert-file=/etc/kafka-autopilot/kafka-client-tls/{{ .certKey }}
- --kafka-key-file=/etc/kafka-autopilot/kafka-client-tls/{{ .keyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.storageApi.url }}
- --storage-api={{ . }}
{{- if $.Values.storageApi.tokenSecret.name }}
- --storage-api-token-file=/etc/kafka-autopilot/storage-api-token/{{ $.Values.storageApi.tokenSecret.key }}
{{- end }}
{{- end }}
{{- if .Values.dryRun }}
- --dry-run
{{- end }}
- --audit-evaluations={{ .Values.audit.evaluations }}
- --state-gc-grace={{ .Values.stateGcGraceSeconds }}
{{- with .Values.audit.eventsTopic }}
- --events-topic={{ . }}
- --events-buffer={{ $.Values.audit.eventsBuffer }}
{{- end }}
- --listen=0.0.0.0:{{ .Values.port }}
{{- if .Values.metrics.perPvcSeries }}
- --metrics-per-pvc
{{- end }}
{{- if .Values.rbac.installCRDs }}
- --install-crds
{{- end }}
{{- range .Values.rbac.approver.users }}
- --approver-user={{ . }}
{{- end }}
{{- range .Values.rbac.approver.groups }}
- --approver-group={{ . }}
{{- end }}
{{- end -}}

{{/* Environment of the agent container: the pod's own name and namespace, and no bytecode writes. */}}
{{- define "kafka-autopilot.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Mounts of the agent container (the volumes are in kafka-autopilot.volumes). */}}
{{- define "kafka-autopilot.volumeMounts" -}}
- name: autopilot-rules
  mountPath: /etc/kafka-autopilot/rules
  readOnly: true
{{- if include "kafka-autopilot.policy" . }}
- name: autopilot-policy
  mountPath: /etc/kafka-autopilot/policy
  readOnly: true
{{- end }}
- name: autopilot-tmp
  mountPath: /tmp
{{- if .Values.prometheus.bearerTokenSecret.name }}
- name: autopilot-prometheus-token
  mountPath: /etc/kafka-autopilot/prometheus-token
  readOnly: true
{{- end }}
{{- if .Values.prometheus.caSecret.name }}
- name: autopilot-prometheus-ca
  mountPath: /etc/kafka-autopilot/prometheus-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.sasl.passwordSecret.name }}
- name: autopilot-kafka-sasl
  mountPath: /etc/kafka-autopilot/kafka-sasl
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.caSecret.name }}
- name: autopilot-kafka-ca
  mountPath: /etc/kafka-autopilot/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientSecret.name }}
- name: autopilot-kafka-client-tls
  mountPath: /etc/kafka-autopilot/kafka-client-tls
  readOnly: true
{{- end }}
{{- if and .Values.storageApi.url .Values.storageApi.tokenSecret.name }}
- name: autopilot-storage-api-token
  mountPath: /etc/kafka-autopilot/storage-api-token
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kafka-autopilot.volumes" -}}
- name: autopilot-rules
  configMap:
    name: {{ include "kafka-autopilot.fullname" . }}-config
    items:
{{- range $name := keys (include "kafka-autopilot.ruleFiles" . | fromYaml) | sortAlpha }}
      - key: {{ $name }}
        path: {{ $name }}
{{- end }}
{{- if include "kafka-autopilot.policy" . }}
- name: autopilot-policy
  configMap:
    name: {{ include "kafka-autopilot.fullname" . }}-config
    items:
      - key: policy.yaml
        path: policy.yaml
{{- end }}
- name: autopilot-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.prometheus.bearerTokenSecret.name }}
- name: autopilot-prometheus-token
  secret:
    secretName: {{ .Values.prometheus.bearerTokenSecret.name }}
    items:
      - key: {{ .Values.prometheus.bearerTokenSecret.key }}
        path: {{ .Values.prometheus.bearerTokenSecret.key }}
{{- end }}
{{- if .Values.prometheus.caSecret.name }}
- name: autopilot-prometheus-ca
  secret:
    secretName: {{ .Values.prometheus.caSecret.name }}
    items:
      - key: {{ .Values.prometheus.caSecret.key }}
        path: {{ .Values.prometheus.caSecret.key }}
{{- end }}
{{- if .Values.kafka.sasl.passwordSecret.name }}
- name: autopilot-kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.passwordSecret.name }}
    items:
      - key: {{ .Values.kafka.sasl.passwordSecret.key }}
        path: {{ .Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- if .Values.kafka.tls.caSecret.name }}
- name: autopilot-kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret.name }}
    items:
      - key: {{ .Values.kafka.tls.caSecret.key }}
        path: {{ .Values.kafka.tls.caSecret.key }}
{{- end }}
{{- with .Values.kafka.tls.clientSecret }}
{{- if .name }}
- name: autopilot-kafka-client-tls
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .certKey }}
        path: {{ .certKey }}
      - key: {{ .keyKey }}
        path: {{ .keyKey }}
{{- end }}
{{- end }}
{{- if and .Values.storageApi.url .Values.storageApi.tokenSecret.name }}
- name: autopilot-storage-api-token
  secret:
    secretName: {{ .Values.storageApi.tokenSecret.name }}
    items:
      - key: {{ .Values.storageApi.tokenSecret.key }}
        path: {{ .Values.storageApi.tokenSecret.key }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The rule files of the ConfigMap, as a YAML map name -> text: the shipped ones chosen, then the extra ones.
`rules.shipped` names them from files/rules/ and files/rules-kubelet/; empty, the set of `rules.volumeMetrics`:
kubelet = files/rules/ with the kubelet rules (files/rules-kubelet/) in place of the Portworx volume rule
kafka-resize.yaml; portworx = files/rules/ as they are. */}}
{{- define "kafka-autopilot.ruleFiles" -}}
{{- $files := dict -}}
{{- $kubelet := eq .Values.rules.volumeMetrics "kubelet" -}}
{{- range $path, $_ := .Files.Glob "files/{rules,rules-kubelet}/*.yaml" -}}
{{- $name := base $path -}}
{{- $inSet := ternary (ne $path "files/rules/kafka-resize.yaml") (hasPrefix "files/rules/" $path) $kubelet -}}
{{- if or (and (not $.Values.rules.shipped) $inSet) (has $name $.Values.rules.shipped) -}}
{{- $_ := set $files $name ($.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- range $name, $text := .Values.rules.extra -}}
{{- $_ := set $files $name $text -}}
{{- end -}}
{{- if not $files -}}
{{- fail "no rule file: rules.shipped names none of files/rules/*.yaml or files/rules-kubelet/*.yaml and rules.extra is empty" -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* The agent's calls on ActionApprovals: get and create one, then patch its status (preview, used,
expired, cancelled). Approvals live in the namespace of the object acted on (the agent's own for
nodes and pools). */}}
{{- define "kafka-autopilot.approvalRules" -}}
- apiGroups: [kafka-autopilot.io]
  resources: [actionapprovals]
  verbs: [get, create, patch]
- apiGroups: [kafka-autopilot.io]
  resources: [actionapprovals/status]
  verbs: [patch]
{{- end -}}

{{/* The policy text the ConfigMap carries: `policy.content`, else the shipped files/policies/<name>.yaml; empty: none. */}}
{{- define "kafka-autopilot.policy" -}}
{{- if .Values.policy.content -}}
{{- .Values.policy.content -}}
{{- else if .Values.policy.name -}}
{{- $path := printf "files/policies/%s.yaml" .Values.policy.name -}}
{{- $text := .Files.Get $path -}}
{{- if not $text -}}
{{- fail (printf "policy.name %q: no such shipped policy (files/policies/*.yaml: default, conservative, audit-only)" .Values.policy.name) -}}
{{- end -}}
{{- $text -}}
{{- end -}}
{{- end -}}
