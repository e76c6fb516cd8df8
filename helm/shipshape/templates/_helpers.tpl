{{/*
Names and labels.
*/}}
{{- define "shipshape.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shipshape.fullname" -}}
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

{{- define "shipshape.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of every pod of the release. */}}
{{- define "shipshape.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipshape.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "shipshape.labels" -}}
helm.sh/chart: {{ include "shipshape.chart" . }}
{{ include "shipshape.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shipshape
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "order"). */}}
{{- define "shipshape.componentSelectorLabels" -}}
{{ include "shipshape.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shipshape.componentLabels" -}}
{{ include "shipshape.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
What each service is: its binary, its ports and what it needs. Product facts
(docs/configuration.md), not settings: the container ports are fixed, and the services are
told them through GRPC_ADDR / HTTP_ADDR / OPS_ADDR.
*/}}
{{- define "shipshape.catalog" -}}
gateway:
  component: gateway
  binary: shipshape-gateway
  api: {name: http, port: 8080, env: HTTP_ADDR}
  opsPort: 9100
  database: false
order:
  component: order
  binary: shipshape-order
  api: {name: grpc, port: 50051, env: GRPC_ADDR}
  opsPort: 9101
  database: true
inventory:
  component: inventory
  binary: shipshape-inventory
  api: {name: grpc, port: 50052, env: GRPC_ADDR}
  opsPort: 9102
  database: true
payment:
  component: payment
  binary: shipshape-payment
  opsPort: 9103
  database: true
shipping:
  component: shipping
  binary: shipshape-shipping
  opsPort: 9104
  database: true
pspSimulator:
  component: psp-simulator
  binary: shipshape-psp-simulator
  api: {name: http, port: 8090, env: HTTP_ADDR}
  opsPort: 9105
  database: false
{{- end }}

{{/* The services, in a fixed order. */}}
{{- define "shipshape.serviceKeys" -}}
{{- list "gateway" "order" "inventory" "payment" "shipping" "pspSimulator" | toJson }}
{{- end }}

{{/* The services with a database and a Kafka consumer. */}}
{{- define "shipshape.databaseKeys" -}}
{{- list "order" "inventory" "payment" "shipping" | toJson }}
{{- end }}

{{/*
One service's settings: serviceDefaults deep-merged with services.<key>.
Usage: $cfg := include "shipshape.serviceConfig" (dict "root" $ "key" "order") | fromYaml
*/}}
{{- define "shipshape.serviceConfig" -}}
{{- $defaults := deepCopy .root.Values.serviceDefaults }}
{{- $override := deepCopy (index .root.Values.services .key | default dict) }}
{{- toYaml (mergeOverwrite $defaults $override) }}
{{- end }}

{{/*
The values only the operator can know, which have no default (values.yaml):
fails, naming each one that is missing and what to put there, so that an
install never runs on a guess (an image Docker Hub does not have, a broker
address that resolves nowhere, an issuer no token carries). Every template
that uses one of them includes this first, so whichever Helm renders first
gives the same message, with all of them.
*/}}
{{- define "shipshape.requiredValues" -}}
{{- $missing := list }}
{{- if not .Values.image.repository }}
{{- $missing = append $missing "image.repository: the image you built and pushed, without its tag, e.g. registry.example.com/shipshape (the tag is the chart's appVersion unless image.tag or image.digest says otherwise; values-dev.yaml: shipshape, loaded into kind or minikube)" }}
{{- end }}
{{- if and (not .Values.kafka.deploy) (not .Values.kafka.brokers) }}
{{- $missing = append $missing "kafka.brokers: your Kafka's bootstrap servers, comma separated, e.g. kafka-0.kafka.example.svc:9092 (their port in kafka.networkPolicy.ports); or kafka.deploy=true for a development broker inside the release (values-dev.yaml)" }}
{{- end }}
{{- if not .Values.auth.issuer }}
{{- $missing = append $missing "auth.issuer: your identity provider's issuer URL, the iss its tokens carry, e.g. https://id.example.com/ (the gateway refuses tokens with any other; values-dev.yaml: shipshape-dev, the issuer of cargo xtask token)" }}
{{- end }}
{{- if $missing }}
{{- fail (printf "values only you can know are not set (values.yaml has no default for them; helm/shipshape/values-production.example.yaml shows them all, values-dev.yaml sets them for kind or minikube):\n  %s" (join "\n  " $missing)) }}
{{- end }}
{{- end }}

{{/*
"true" when Helm renders against a cluster (install, upgrade,
--dry-run=server): listing Secrets answers, an empty list at worst, only
from a cluster. `helm template` reaches none; the templates that make
secrets at install (Kafka's and PostgreSQL's passwords, the development
HS256 secret and gRPC CA) then render fixed DEVELOPMENT values instead of
random ones nothing could keep.
Usage: $online := eq (include "shipshape.online" .) "true"
*/}}
{{- define "shipshape.online" -}}
{{- not (empty (lookup "v1" "Secret" .Release.Namespace "")) -}}
{{- end }}

{{/* image reference: repository:tag, or repository@digest. */}}
{{- define "shipshape.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Kafka bootstrap servers the services use. */}}
{{- define "shipshape.kafkaBrokers" -}}
{{- if .Values.kafka.deploy }}
{{- printf "%s-kafka:9092" (include "shipshape.fullname" .) }}
{{- else }}
{{- .Values.kafka.brokers }}
{{- end }}
{{- end }}

{{/*
How the release reaches Kafka (values.yaml: kafka.auth, kafka.tls), as YAML,
after refusing settings that cannot work:
  auth: whether the clients log in (SCRAM)
  protocol: KAFKA_SECURITY_PROTOCOL
  secretName: the Secret with the passwords ("" without auth)
  tls: whether the CA (and the in-release broker's certificate) come from
    kafka.tls.secretName
Usage: $k := include "shipshape.kafkaAuth" $ | fromYaml
*/}}
{{- define "shipshape.kafkaAuth" -}}
{{- $kafka := .Values.kafka }}
{{- $auth := $kafka.auth }}
{{- $tls := $kafka.tls }}
{{- if and $tls.enabled (not $auth.enabled) }}
{{- fail "kafka.tls.enabled needs kafka.auth.enabled: the services speak TLS to the broker only with SASL_SSL" }}
{{- end }}
{{- if and $tls.enabled (ne $auth.securityProtocol "SASL_SSL") }}
{{- fail (printf "kafka.tls.enabled: the services trust the broker's CA only over TLS, but kafka.auth.securityProtocol is %s: set it to SASL_SSL" $auth.securityProtocol) }}
{{- end }}
{{- if and $tls.secretName (not $tls.enabled) }}
{{- fail "kafka.tls.secretName is set but kafka.tls.enabled is false: the services would trust only the system's CAs and ignore the Secret; set kafka.tls.enabled=true (values.yaml: kafka.tls)" }}
{{- end }}
{{- if and $tls.enabled (not $tls.secretName) }}
{{- fail "kafka.tls.enabled needs kafka.tls.secretName: a Secret with ca.crt (and, for the in-release broker, tls.crt and tls.key), such as cert-manager makes" }}
{{- end }}
{{- if and $kafka.deploy $auth.enabled (eq $auth.securityProtocol "SASL_SSL") (not $tls.enabled) }}
{{- fail "kafka.auth.securityProtocol SASL_SSL: the in-release broker serves TLS only with a certificate; set kafka.tls.enabled and kafka.tls.secretName (values.yaml: kafka.tls), or use SASL_PLAINTEXT" }}
{{- end }}
{{- if and $auth.enabled (not $kafka.deploy) (not $auth.existingSecret) }}
{{- fail "kafka.auth.existingSecret is required with your own Kafka: the setup Job logs in as the broker's super user, whose password only you know. Create a Secret with keys admin-password, order-password, inventory-password, payment-password and shipping-password (NOTES.txt shows how) and set kafka.auth.existingSecret to its name (values.yaml: kafka.auth)" }}
{{- end }}
auth: {{ $auth.enabled }}
protocol: {{ ternary $auth.securityProtocol "PLAINTEXT" $auth.enabled | quote }}
secretName: {{ ternary ($auth.existingSecret | default (printf "%s-kafka-auth" (include "shipshape.fullname" .))) "" $auth.enabled | quote }}
tls: {{ $tls.enabled }}
{{- end }}

{{/* Where the services and the setup Job find Kafka's passwords and CA. */}}
{{- define "shipshape.kafkaSecretsDir" -}}
/var/run/secrets/shipshape/kafka
{{- end }}
{{- define "shipshape.kafkaCaDir" -}}
/var/run/secrets/shipshape/kafka-ca
{{- end }}

{{/*
The setup Job of this release revision (kafka-setup.yaml):
<fullname>-kafka-setup-<revision>, within a Job name's 63 characters (the
fullname cut to 40 for "-kafka-setup-" and up to ten digits).
*/}}
{{- define "shipshape.kafkaSetupJobName" -}}
{{- printf "%s-kafka-setup-%d" (include "shipshape.fullname" . | trunc 40 | trimSuffix "-") (int .Release.Revision) }}
{{- end }}

{{/* Whose passwords the Kafka Secret holds: the super user and each service. */}}
{{- define "shipshape.kafkaLogins" -}}
{{- list "admin" "order" "inventory" "payment" "shipping" | toJson }}
{{- end }}

{{/*
The settings of every Kafka client of the release (the services with a
consumer and the setup Job), as YAML; each adds its own login.
*/}}
{{- define "shipshape.kafkaClientEnv" -}}
{{- $k := include "shipshape.kafkaAuth" . | fromYaml }}
KAFKA_BROKERS: {{ include "shipshape.kafkaBrokers" . | quote }}
KAFKA_TOPIC_PARTITIONS: {{ toString .Values.kafka.topicPartitions | quote }}
KAFKA_REPLICATION_FACTOR: {{ toString .Values.kafka.replicationFactor | quote }}
{{- with .Values.kafka.topicPrefix }}
KAFKA_TOPIC_PREFIX: {{ . | quote }}
{{- end }}
{{- if $k.auth }}
KAFKA_SECURITY_PROTOCOL: {{ $k.protocol | quote }}
KAFKA_SASL_MECHANISM: {{ .Values.kafka.auth.mechanism | quote }}
{{- end }}
{{- if $k.tls }}
KAFKA_SSL_CA_LOCATION: {{ printf "%s/ca.crt" (include "shipshape.kafkaCaDir" .) | quote }}
{{- end }}
{{- end }}

{{/*
gRPC over mutual TLS (values.yaml: grpc.tls): the services that serve or call
gRPC, each with a certificate naming it (its key here is its name too), where
they find their files, and each one's Secret.
*/}}
{{- define "shipshape.grpcTlsPeers" -}}
{{- list "gateway" "order" "inventory" | toJson }}
{{- end }}
{{- define "shipshape.grpcTlsDir" -}}
/var/run/secrets/shipshape/grpc-tls
{{- end }}
{{/* (dict "root" $ "key" "order") */}}
{{- define "shipshape.grpcTlsSecretName" -}}
{{- index (.root.Values.grpc.tls.secretNames | default dict) .key | default (printf "%s-%s-grpc-tls" (include "shipshape.fullname" .root) .key) }}
{{- end }}
{{/* Whether a service key presents a certificate: a gRPC peer, with grpc.tls. */}}
{{- define "shipshape.grpcTls" -}}
{{- if and .root.Values.grpc.tls.enabled (has .key (include "shipshape.grpcTlsPeers" .root | fromJsonArray)) }}true{{ end }}
{{- end }}

{{/* The Secret with the services' DATABASE_URLs. */}}
{{- define "shipshape.databaseSecretName" -}}
{{- if .Values.postgresql.deploy }}
{{- printf "%s-database" (include "shipshape.fullname" .) }}
{{- else }}
{{- .Values.postgresql.existingSecret }}
{{- end }}
{{- end }}

{{/*
The gateway's token key: the Secret, its key, the file the gateway reads and
the variable naming it, and whether it is the chart's DEVELOPMENT secret
(auth.devHs256Secret or auth.generateDevSecret; jwt-dev-only.yaml). Fails,
with what to do, when no key is configured.
Usage: $key := include "shipshape.authKey" $ | fromYaml
*/}}
{{- define "shipshape.authKey" -}}
{{- $auth := .Values.auth }}
{{- $hs256 := eq $auth.algorithm "HS256" }}
{{- $dev := or (not (empty $auth.devHs256Secret)) (not (empty $auth.generateDevSecret)) }}
{{- if $dev }}
{{- $which := ternary "auth.devHs256Secret" "auth.generateDevSecret" (not (empty $auth.devHs256Secret)) }}
{{- if not $hs256 }}
{{- fail (printf "%s makes a DEVELOPMENT HS256 secret, but auth.algorithm is %s: set auth.algorithm=HS256 (development), or drop %s and put the identity provider's public key in auth.existingSecret" $which $auth.algorithm $which) }}
{{- end }}
{{- if and $auth.devHs256Secret (lt (len $auth.devHs256Secret) 32) }}
{{- fail "auth.devHs256Secret must be at least 32 bytes" }}
{{- end }}
{{- else if not $auth.existingSecret }}
{{- fail (printf "auth.existingSecret is required: the gateway verifies bearer tokens with the key in that Secret (%s) and refuses to start without one. Create it, e.g. kubectl create secret generic shipshape-jwt --from-file=%s=KEY_FILE, and set auth.existingSecret=shipshape-jwt (NOTES.txt; values.yaml: auth)" (ternary "the HS256 secret, at least 32 bytes" "the identity provider's PEM public key" $hs256) (ternary "hs256-secret" "public-key.pem" $hs256)) }}
{{- end }}
{{- $secretKey := $auth.secretKey | default (ternary "hs256-secret" "public-key.pem" $hs256) }}
{{- if $dev }}
{{- $secretKey = "hs256-secret" }}
{{- end }}
dev: {{ $dev }}
secretName: {{ ternary (printf "%s-jwt-dev-only" (include "shipshape.fullname" .)) $auth.existingSecret $dev | quote }}
secretKey: {{ $secretKey | quote }}
mountPath: /var/run/secrets/shipshape/jwt
path: {{ printf "/var/run/secrets/shipshape/jwt/%s" $secretKey | quote }}
variable: {{ ternary "JWT_HS256_SECRET_FILE" "JWT_PUBLIC_KEY_FILE" $hs256 | quote }}
{{- end }}

{{/*
The environment of one service (its ConfigMap's data), as YAML.
(dict "root" $ "key" "order" "svc" $catalogEntry "cfg" $serviceConfig)
*/}}
{{- define "shipshape.serviceEnv" -}}
{{- $root := .root }}
{{- /* An IPv6 address is written in brackets before its port. */}}
{{- $bind := ternary (printf "[%s]" $root.Values.bindAddress) $root.Values.bindAddress (contains ":" $root.Values.bindAddress) }}
{{- $fullname := include "shipshape.fullname" $root }}
{{- $env := dict
  "LOG_FORMAT" $root.Values.logFormat
  "RUST_LOG" $root.Values.logLevel
  "OPS_ADDR" (printf "%s:%d" $bind (int .svc.opsPort))
  "OTEL_SERVICE_NAME" .svc.component
}}
{{- with .svc.api }}
{{- $_ := set $env .env (printf "%s:%d" $bind (int .port)) }}
{{- if eq .name "grpc" }}
{{- $_ := set $env "GRPC_REFLECTION" (toString $root.Values.grpc.reflection) }}
{{- end }}
{{- end }}
{{- if $root.Values.observability.otlpEndpoint }}
{{- $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $root.Values.observability.otlpEndpoint }}
{{- end }}
{{- /* With grpc.tls, https: the process refuses http:// URLs once it holds a
certificate. The servers' certificates name the short service names
(order, inventory), which the clients check whatever address they dial. */}}
{{- $grpcScheme := ternary "https" "http" (not (empty $root.Values.grpc.tls.enabled)) }}
{{- if include "shipshape.grpcTls" (dict "root" $root "key" .key) }}
{{- $dir := include "shipshape.grpcTlsDir" $root }}
{{- $_ := set $env "GRPC_TLS_CERT" (printf "%s/tls.crt" $dir) }}
{{- $_ := set $env "GRPC_TLS_KEY" (printf "%s/tls.key" $dir) }}
{{- $_ := set $env "GRPC_TLS_CA" (printf "%s/ca.crt" $dir) }}
{{- end }}
{{- if eq .key "gateway" }}
{{- $_ := set $env "ORDER_URL" (printf "%s://%s-order:50051" $grpcScheme $fullname) }}
{{- $_ := set $env "INVENTORY_URL" (printf "%s://%s-inventory:50052" $grpcScheme $fullname) }}
{{- /* The key itself is a mounted file (deployment.yaml); only its path is here. */}}
{{- $key := include "shipshape.authKey" $root | fromYaml }}
{{- $_ := set $env "JWT_ISSUER" $root.Values.auth.issuer }}
{{- $_ := set $env "JWT_AUDIENCE" $root.Values.auth.audience }}
{{- $_ := set $env "JWT_ALGORITHM" $root.Values.auth.algorithm }}
{{- $_ := set $env "JWT_LEEWAY_SECS" (toString (int $root.Values.auth.leewaySecs)) }}
{{- $_ := set $env $key.variable $key.path }}
{{- if and $root.Values.web.demoSignIn (ne $root.Values.auth.algorithm "HS256") }}
{{- fail (printf "web.demoSignIn: the gateway signs the demo accounts' tokens with its HS256 secret, but auth.algorithm is %s: set auth.algorithm=HS256 (development) or leave web.demoSignIn off" $root.Values.auth.algorithm) }}
{{- end }}
{{- $_ := set $env "DEMO_SIGN_IN" (toString $root.Values.web.demoSignIn) }}
{{- $_ := set $env "SESSION_COOKIE_SECURE" (toString $root.Values.web.secureCookie) }}
{{- with $root.Values.web.jaegerUiUrl }}
{{- $_ := set $env "JAEGER_UI_URL" . }}
{{- end }}
{{- end }}
{{- if eq .key "order" }}
{{- $_ := set $env "INVENTORY_URL" (printf "%s://%s-inventory:50052" $grpcScheme $fullname) }}
{{- end }}
{{- if eq .key "payment" }}
{{- $_ := set $env "PSP_URL" (printf "http://%s-psp-simulator:8090" $fullname) }}
{{- end }}
{{- if and (eq .key "pspSimulator") $root.Values.pspSimulator.journal.enabled }}
{{- $_ := set $env "PSP_JOURNAL_PATH" (printf "%s/ledger.jsonl" (include "shipshape.pspJournalDir" $root)) }}
{{- end }}
{{- if .svc.database }}
{{- range $name, $value := include "shipshape.kafkaClientEnv" $root | fromYaml }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- /* Its own login: the password is a mounted file (deployment.yaml). */}}
{{- if (include "shipshape.kafkaAuth" $root | fromYaml).auth }}
{{- $_ := set $env "KAFKA_SASL_USERNAME" (printf "%s%s" $root.Values.kafka.topicPrefix .svc.component) }}
{{- $_ := set $env "KAFKA_SASL_PASSWORD_FILE" (printf "%s/password" (include "shipshape.kafkaSecretsDir" $root)) }}
{{- end }}
{{- $_ := set $env "DATABASE_MAX_CONNECTIONS" (toString $root.Values.postgresql.maxConnections) }}
{{- end }}
{{- range $name, $value := .cfg.env }}
{{- $_ := set $env $name (toString $value) }}
{{- end }}
{{- range $name, $value := $env }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end }}

{{/* Pod and container security settings shared by every workload. */}}
{{- define "shipshape.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* (dict "uid" 65532) */}}
{{- define "shipshape.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* NetworkPolicy egress rule to the cluster DNS (values.yaml: networkPolicy.dns). */}}
{{- define "shipshape.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.dns.ports | default (list 53) }}
    - {port: {{ int . }}, protocol: UDP}
    - {port: {{ int . }}, protocol: TCP}
    {{- end }}
{{- end }}

{{/*
NetworkPolicy egress rule to Kafka: the in-release broker's pods, or
kafka.networkPolicy's ports and peers.
*/}}
{{- define "shipshape.kafkaEgress" -}}
{{- if .Values.kafka.deploy }}
- to:
    - podSelector:
        matchLabels:
          {{- include "shipshape.componentSelectorLabels" (dict "root" . "component" "kafka") | nindent 10 }}
  ports:
    - {port: 9092, protocol: TCP}
{{- else }}
- ports:
    {{- range .Values.kafka.networkPolicy.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .Values.kafka.networkPolicy.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
Where the PSP simulator journals its ledger (PSP_JOURNAL_PATH), on the volume
"journal" (values.yaml: pspSimulator.journal).
*/}}
{{- define "shipshape.pspJournalDir" -}}
/var/lib/shipshape/psp-simulator
{{- end }}

{{/*
The PostgreSQL connections the services' pools may hold at their peak, and
what the server leaves them (values.yaml: postgresql.server), as YAML:
  services: {order: {pool, pods, connections}, …}   in shipshape.databaseKeys order
  total: the sum over the services
  maxConnections: the server's max_connections; 0 when unknown (your own
    server, not given)
  available: maxConnections - reservedConnections
  onePerService: whether each service has a server of its own
A pod's pool is DATABASE_MAX_CONNECTIONS (postgresql.maxConnections, unless a
service's env overrides it); a service's most pods are autoscaling.maxReplicas
(or replicas) plus the rolling update's maxSurge, a percentage of which
Kubernetes rounds up. Not counted: old pods still shutting down when a
rollout ends hold theirs a little longer; reservedConnections can leave room.
Usage: $db := include "shipshape.databaseConnections" $ | fromYaml
*/}}
{{- define "shipshape.databaseConnections" -}}
{{- $pg := .Values.postgresql }}
{{- $server := $pg.server | default dict }}
{{- $total := 0 }}
services:
{{- range $key := include "shipshape.databaseKeys" . | fromJsonArray }}
{{- $cfg := include "shipshape.serviceConfig" (dict "root" $ "key" $key) | fromYaml }}
{{- $pool := int $pg.maxConnections }}
{{- if hasKey ($cfg.env | default dict) "DATABASE_MAX_CONNECTIONS" }}
{{- $pool = int (index $cfg.env "DATABASE_MAX_CONNECTIONS") }}
{{- end }}
{{- $most := int (ternary $cfg.autoscaling.maxReplicas $cfg.replicas $cfg.autoscaling.enabled) }}
{{- $surge := toString $cfg.rollingUpdate.maxSurge }}
{{- $extra := 0 }}
{{- if hasSuffix "%" $surge }}
{{- $extra = div (add (mul $most (atoi (trimSuffix "%" $surge))) 99) 100 }}
{{- else }}
{{- $extra = int $cfg.rollingUpdate.maxSurge }}
{{- end }}
{{- $pods := add $most $extra }}
{{- $total = add $total (mul $pool $pods) }}
  {{ $key }}: {pool: {{ $pool }}, pods: {{ $pods }}, connections: {{ mul $pool $pods }}}
{{- end }}
total: {{ $total }}
{{- $max := 0 }}
{{- if $server.maxConnections }}
{{- $max = int $server.maxConnections }}
{{- else if $pg.deploy }}
{{- /* The in-release server without the value: PostgreSQL's default. */}}
{{- $max = 100 }}
{{- end }}
maxConnections: {{ $max }}
reservedConnections: {{ int ($server.reservedConnections | default 0) }}
available: {{ sub $max (int ($server.reservedConnections | default 0)) }}
onePerService: {{ and (not $pg.deploy) ($server.onePerService | default false) }}
{{- end }}

{{/*
Fails, saying what to change, when the services' pools cannot fit in the
PostgreSQL server (see shipshape.databaseConnections); with your own server
only when postgresql.server.maxConnections says how many it takes.
*/}}
{{- define "shipshape.checkDatabaseConnections" -}}
{{- $db := include "shipshape.databaseConnections" . | fromYaml }}
{{- if gt (int $db.maxConnections) 0 }}
{{- $fix := "lower postgresql.maxConnections (the pool of each pod) or the replicas, raise the server's max_connections (postgresql.server.maxConnections), or point the DATABASE_URLs at a pooler such as PgBouncer and set postgresql.server.maxConnections to its max_client_conn (values.yaml: postgresql.server)" }}
{{- $leaves := printf "max_connections %d - reservedConnections %d" (int $db.maxConnections) (int $db.reservedConnections) }}
{{- $parts := list }}
{{- range $key := include "shipshape.databaseKeys" . | fromJsonArray }}
{{- $s := index $db.services $key }}
{{- $part := printf "%s %d = %d x %d" $key (int $s.connections) (int $s.pool) (int $s.pods) }}
{{- $parts = append $parts $part }}
{{- if and $db.onePerService (gt (int $s.connections) (int $db.available)) }}
{{- fail (printf "postgresql: at its peak %s holds %d connections (a pool of %d x %d pods: its most replicas plus maxSurge), but its server leaves it only %d (%s): %s" $key (int $s.connections) (int $s.pool) (int $s.pods) (int $db.available) $leaves $fix) }}
{{- end }}
{{- end }}
{{- if and (not $db.onePerService) (gt (int $db.total) (int $db.available)) }}
{{- fail (printf "postgresql: at their peak the services' pools hold %d connections (%s: pool x pods, each service's most replicas plus maxSurge), but the server they share leaves them only %d (%s): %s" (int $db.total) (join ", " $parts) (int $db.available) $leaves $fix) }}
{{- end }}
{{- end }}
{{- end }}
