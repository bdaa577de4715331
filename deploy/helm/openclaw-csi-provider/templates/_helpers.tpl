{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "openclaw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: the release name, or <release>-<chart> when it does not hold the chart
name. Truncated to 48 characters so that suffixed names (-sync-hmac-key) stay within 63. */}}
{{- define "openclaw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "openclaw.syncName" -}}
{{- printf "%s-sync" (include "openclaw.fullname" .) -}}
{{- end -}}

{{/* Labels of every object besides name and instance. */}}
{{- define "openclaw.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "openclaw.labels" -}}
app.kubernetes.io/name: {{ include "openclaw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "openclaw.commonLabels" . }}
{{- end -}}

{{/* Selector labels of the provider pods. */}}
{{- define "openclaw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openclaw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: provider
{{- end -}}

{{/* Selector labels of the sync controller pods. */}}
{{- define "openclaw.syncSelectorLabels" -}}
app.kubernetes.io/name: {{ include "openclaw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: sync
{{- end -}}

{{- define "openclaw.serviceAccountName" -}}
{{- default (include "openclaw.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "openclaw.syncServiceAccountName" -}}
{{- default (include "openclaw.syncName" .) .Values.sync.serviceAccount.name -}}
{{- end -}}

{{- define "openclaw.hmacKeySecretName" -}}
{{- default (printf "%s-hmac-key" (include "openclaw.fullname" .)) .Values.hmacKey.name -}}
{{- end -}}

{{- define "openclaw.syncHmacKeySecretName" -}}
{{- default (printf "%s-hmac-key" (include "openclaw.syncName" .)) .Values.sync.hmacKey.name -}}
{{- end -}}

{{/* The Lease the sync replicas elect their leader with (--leader-election-id). */}}
{{- define "openclaw.syncLeaseName" -}}
{{- include "openclaw.syncName" . -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; the second argument is the default tag. */}}
{{- define "openclaw.imageRef" -}}
{{- $image := index . 0 -}}
{{- $tag := default (index . 1) $image.tag | toString -}}
{{- $ref := $image.repository -}}
{{- if $tag -}}{{- $ref = printf "%s:%s" $ref $tag -}}{{- end -}}
{{- if $image.digest -}}{{- $ref = printf "%s@%s" $ref $image.digest -}}{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "openclaw.image" -}}
{{- include "openclaw.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "openclaw.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Whether the DaemonSet reads the AWS default region from its node's label (NODE_NAME, nodes get). */}}
{{- define "openclaw.awsRegionFromNode" -}}
{{- if and .Values.backends.aws.enabled .Values.backends.aws.regionFromNode (not .Values.backends.aws.region) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether a backend that reads service-account annotations (aws: IRSA role, gcp: impersonation) is on. */}}
{{- define "openclaw.readsServiceAccounts" -}}
{{- if or .Values.backends.aws.enabled .Values.backends.gcp.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* Value checks: fail the render with a message naming the value. */}}
{{- define "openclaw.validate" -}}
{{- $b := .Values.backends -}}
{{- $enabled := dict "file" $b.file.enabled "vault" $b.vault.enabled "aws" $b.aws.enabled "gcp" $b.gcp.enabled -}}
{{- if not (or $b.file.enabled $b.vault.enabled $b.aws.enabled $b.gcp.enabled) -}}
{{- fail "backends: enable at least one backend" -}}
{{- end -}}
{{- if and .Values.sync.enabled (not (or $b.vault.enabled $b.aws.enabled $b.gcp.enabled)) -}}
{{- fail "sync.enabled: the sync controller reads vault, aws or gcp; enable one of them" -}}
{{- end -}}
{{- if and .Values.sync.enabled (eq (include "openclaw.serviceAccountName" .) (include "openclaw.syncServiceAccountName" .)) -}}
{{- fail "sync.serviceAccount.name: must differ from serviceAccount.name (the provider must never hold the sync controller's rights)" -}}
{{- end -}}
{{- if and .Values.sync.enabled (eq (include "openclaw.hmacKeySecretName" .) (include "openclaw.syncHmacKeySecretName" .)) -}}
{{- fail "sync.hmacKey.name: must differ from hmacKey.name" -}}
{{- end -}}
{{- range .Values.compat -}}
{{- if not (has . (list "vault" "aws" "gcp")) -}}
{{- fail (printf "compat: %q is not one of vault, aws, gcp" .) -}}
{{- end -}}
{{- if not (index $enabled .) -}}
{{- fail (printf "compat: %q needs backends.%s.enabled" . .) -}}
{{- end -}}
{{- end -}}
{{- with .Values.defaultBackend -}}
{{- if not (hasKey $enabled .) -}}
{{- fail (printf "defaultBackend: %q is not one of file, vault, aws, gcp" .) -}}
{{- end -}}
{{- if not (index $enabled .) -}}
{{- fail (printf "defaultBackend: %q needs backends.%s.enabled" . .) -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.logFormat (list "json" "text")) -}}
{{- fail (printf "logFormat: %q is not json or text" .Values.logFormat) -}}
{{- end -}}
{{- if not (has $b.file.layout (list "per-namespace" "shared")) -}}
{{- fail (printf "backends.file.layout: %q is not per-namespace or shared" $b.file.layout) -}}
{{- end -}}
{{- if and $b.vault.tls.caCert.configMap $b.vault.tls.caCert.secret -}}
{{- fail "backends.vault.tls.caCert: set configMap or secret, not both" -}}
{{- end -}}
{{- if and .Values.nonRoot.enabled (eq (int .Values.nonRoot.runAsUser) 0) -}}
{{- fail "nonRoot.runAsUser: 0 is root; set nonRoot.enabled=false instead" -}}
{{- end -}}
{{- with .Values.updateStrategy.rollingUpdate -}}
{{- if and .maxSurge (ne (toString .maxSurge) "0") (ne (toString .maxSurge) "0%") -}}
{{- fail "updateStrategy.rollingUpdate.maxSurge must stay 0: two providers on one node cannot share the socket" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Mount paths of the files the backends' flags name. */}}
{{- define "openclaw.vaultCaDir" -}}/etc/openclaw-csi-provider/vault-ca{{- end -}}
{{- define "openclaw.vaultClientDir" -}}/etc/openclaw-csi-provider/vault-client{{- end -}}
{{- define "openclaw.gcpCredentialsDir" -}}/etc/openclaw-csi-provider/gcp{{- end -}}

{{/* The backend flags `serve` and `sync` share (vault, aws, gcp), as YAML list items. */}}
{{- define "openclaw.backendArgs" -}}
{{- $b := .Values.backends -}}
{{- if $b.vault.enabled }}
{{- with $b.vault.address }}
- {{ printf "--vault-addr=%s" . | quote }}
{{- end }}
{{- with $b.vault.allowedAddresses }}
- {{ printf "--vault-allowed-addresses=%s" (join "," .) | quote }}
{{- end }}
{{- with $b.vault.namespace }}
- {{ printf "--vault-namespace=%s" . | quote }}
{{- end }}
{{- with $b.vault.authMount }}
- {{ printf "--vault-mount=%s" . | quote }}
{{- end }}
{{- with $b.vault.tls }}
{{- if or .caCert.configMap .caCert.secret }}
- {{ printf "--vault-ca-cert=%s/%s" (include "openclaw.vaultCaDir" $) (.caCert.key) | quote }}
{{- end }}
{{- if .clientCert.secret }}
- {{ printf "--vault-client-cert=%s/%s" (include "openclaw.vaultClientDir" $) (.clientCert.certKey) | quote }}
- {{ printf "--vault-client-key=%s/%s" (include "openclaw.vaultClientDir" $) (.clientCert.keyKey) | quote }}
{{- end }}
{{- with .serverName }}
- {{ printf "--vault-tls-server-name=%s" . | quote }}
{{- end }}
{{- if .skipVerify }}
- --vault-skip-verify=true
{{- end }}
{{- if .allowInsecureFromPods }}
- --allow-insecure-tls
{{- end }}
{{- end }}
{{- end }}
{{- if $b.aws.enabled }}
{{- with $b.aws.region }}
- {{ printf "--aws-region=%s" . | quote }}
{{- end }}
{{- with $b.aws.podIdentityEndpoint }}
- {{ printf "--aws-pod-identity-endpoint=%s" . | quote }}
{{- end }}
{{- end }}
{{- if $b.gcp.enabled }}
{{- with $b.gcp.project }}
- {{ printf "--gcp-project=%s" . | quote }}
{{- end }}
{{- with $b.gcp.clusterLocation }}
- {{ printf "--gcp-cluster-location=%s" . | quote }}
{{- end }}
{{- with $b.gcp.clusterName }}
- {{ printf "--gcp-cluster-name=%s" . | quote }}
{{- end }}
{{- if $b.gcp.credentials.configMap }}
- {{ printf "--gcp-credentials-file=%s/%s" (include "openclaw.gcpCredentialsDir" $) ($b.gcp.credentials.key) | quote }}
{{- end }}
{{- with $b.gcp.endpoints.sts }}
- {{ printf "--gcp-sts-endpoint=%s" . | quote }}
{{- end }}
{{- with $b.gcp.endpoints.iamCredentials }}
- {{ printf "--gcp-iam-credentials-endpoint=%s" . | quote }}
{{- end }}
{{- with $b.gcp.endpoints.secretManager }}
- {{ printf "--gcp-secretmanager-endpoint=%s" . | quote }}
{{- end }}
{{- with $b.gcp.endpoints.parameterManager }}
- {{ printf "--gcp-parametermanager-endpoint=%s" . | quote }}
{{- end }}
{{- with $b.gcp.endpoints.metadata }}
- {{ printf "--gcp-metadata-endpoint=%s" . | quote }}
{{- end }}
{{- if $b.gcp.allowProviderADC }}
- --gcp-allow-provider-adc
{{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts of the backend files (vault CA and client certificate, GCP credentials file). */}}
{{- define "openclaw.backendVolumeMounts" -}}
{{- $b := .Values.backends -}}
{{- if $b.vault.enabled }}
{{- if or $b.vault.tls.caCert.configMap $b.vault.tls.caCert.secret }}
- name: vault-ca
  mountPath: {{ include "openclaw.vaultCaDir" . }}
  readOnly: true
{{- end }}
{{- if $b.vault.tls.clientCert.secret }}
- name: vault-client
  mountPath: {{ include "openclaw.vaultClientDir" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- if and $b.gcp.enabled $b.gcp.credentials.configMap }}
- name: gcp-credentials
  mountPath: {{ include "openclaw.gcpCredentialsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "openclaw.backendVolumes" -}}
{{- $b := .Values.backends -}}
{{- if $b.vault.enabled }}
{{- with $b.vault.tls.caCert }}
{{- if .configMap }}
- name: vault-ca
  configMap:
    name: {{ .configMap }}
    items:
      - {key: {{ .key | quote }}, path: {{ .key | quote }}}
{{- else if .secret }}
- name: vault-ca
  secret:
    secretName: {{ .secret }}
    items:
      - {key: {{ .key | quote }}, path: {{ .key | quote }}}
{{- end }}
{{- end }}
{{- with $b.vault.tls.clientCert }}
{{- if .secret }}
- name: vault-client
  secret:
    secretName: {{ .secret }}
    items:
      - {key: {{ .certKey | quote }}, path: {{ .certKey | quote }}}
      - {key: {{ .keyKey | quote }}, path: {{ .keyKey | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- if and $b.gcp.enabled $b.gcp.credentials.configMap }}
- name: gcp-credentials
  configMap:
    name: {{ $b.gcp.credentials.configMap }}
    items:
      - {key: {{ $b.gcp.credentials.key | quote }}, path: {{ $b.gcp.credentials.key | quote }}}
{{- end }}
{{- end -}}

{{/* The CSIDriver tokenRequests audiences the enabled backends need (one per line). */}}
{{- define "openclaw.audiences" -}}
{{- $b := .Values.backends -}}
{{- if $b.vault.enabled }}
{{- range $b.vault.audiences }}
{{ . }}
{{- end }}
{{- end }}
{{- if $b.aws.enabled }}
sts.amazonaws.com
{{- if $b.aws.podIdentity }}
pods.eks.amazonaws.com
{{- end }}
{{- end }}
{{- if $b.gcp.enabled }}
{{- if $b.gcp.audience }}
{{ $b.gcp.audience }}
{{- else if $b.gcp.project }}
{{ $b.gcp.project }}.svc.id.goog
{{- else }}
<project>.svc.id.goog
{{- end }}
{{- end }}
{{- end -}}

{{/*
The backends mounts may use (--backends): those enabled in values.
*/}}
{{- define "openclaw.enabledBackends" -}}
{{- $names := list -}}
{{- range $name := list "file" "vault" "aws" "gcp" -}}
{{- if (index $.Values.backends $name).enabled -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/*
The backends the sync controller may use (--backends): the enabled remote ones (it runs on no node, so
never the file backend).
*/}}
{{- define "openclaw.syncBackends" -}}
{{- $names := list -}}
{{- range $name := list "vault" "aws" "gcp" -}}
{{- if (index $.Values.backends $name).enabled -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
