{{/*
Chart name, overridable with nameOverride.
*/}}
{{- define "bpl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or <release> when it already contains the chart name.
Truncated to 63 characters (the DNS label limit some fields have).
*/}}
{{- define "bpl.fullname" -}}
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

{{- define "bpl.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "bpl.labels" -}}
helm.sh/chart: {{ include "bpl.chart" . }}
{{ include "bpl.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: bedrock-privatelink
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "bpl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bpl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "bpl.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bpl.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false: name an existing ServiceAccount (with its IRSA annotation or Pod Identity association)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "bpl.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Cross-field checks that values.schema.json cannot word clearly. Included by deployment.yaml,
so `helm install` and `helm template` stop with this message before anything is applied.
*/}}
{{- define "bpl.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "\n\nreplicaCount=%d requires leaderElection.enabled=true: without the leader Lease every replica would reconcile the same BedrockPrivateLinks and race on the same AWS VPC endpoints and security groups.\nFix: --set leaderElection.enabled=true, or --set replicaCount=1.\n" (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
