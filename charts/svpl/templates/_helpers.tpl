{{/* Names and labels. */}}
{{- define "svpl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; with "svpl.selector" (name + instance) they are complete. */}}
{{- define "svpl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: svpl
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "name" "media"). */}}
{{- define "svpl.selector" -}}
app.kubernetes.io/name: svpl-{{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
The fixed facts of each service, from the code and ARCHITECTURE.md (not values: they follow
the contracts). kind grpc|http; port; database: uses MongoDB; calls: the services it calls.
*/}}
{{- define "svpl.facts" -}}
identity: {kind: grpc, port: 50051, health: svpl.identity.v1.IdentityService, database: true, metrics: true, calls: []}
booking: {kind: grpc, port: 50052, health: svpl.booking.v1.BookingService, database: true, metrics: true, calls: [identity, roster]}
roster: {kind: grpc, port: 50053, health: svpl.roster.v1.RosterService, database: true, metrics: true, calls: [identity, media, booking]}
media: {kind: grpc, port: 50054, health: svpl.media.v1.MediaService, database: true, metrics: true, calls: [identity, roster]}
support: {kind: grpc, port: 50055, health: svpl.support.v1.SupportService, database: true, metrics: true, calls: [identity, roster, media, booking]}
gateway: {kind: http, port: 8080, health: "", database: false, metrics: true, calls: [identity, booking, roster, media, support]}
{{- end -}}

{{- define "svpl.componentNames" -}}
[identity, booking, roster, media, support, gateway]
{{- end -}}

{{- define "svpl.metricsPort" -}}9464{{- end -}}

{{/*
One component's effective values: componentDefaults, overridden by components.<name>,
plus its facts. (dict "root" $ "name" "media") -> YAML.
*/}}
{{- define "svpl.component" -}}
{{- $raw := index .root.Values.components .name | default dict -}}
{{- /* Two-level merge by key presence (sprig's merge treats false/0 as unset, so
       `pdb.enabled: false` over a default of true would be lost). */ -}}
{{- $c := deepCopy $raw -}}
{{- range $k, $d := .root.Values.componentDefaults -}}
{{- if not (hasKey $c $k) -}}
{{- $_ := set $c $k (deepCopy $d) -}}
{{- else if and (kindIs "map" $d) (kindIs "map" (index $c $k)) -}}
{{- $own := index $c $k -}}
{{- range $sk, $sv := $d -}}
{{- if not (hasKey $own $sk) -}}
{{- $_ := set $own $sk (deepCopy $sv) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $facts := index (include "svpl.facts" . | fromYaml) .name -}}
{{- $_ := set $c "facts" $facts -}}
{{- $_ := set $c "name" .name -}}
{{- $_ := set $c "fullname" (printf "%s-%s" (include "svpl.fullname" .root) .name) -}}
{{- toYaml $c -}}
{{- end -}}

{{- define "svpl.image" -}}
{{- $img := .c.image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/svpl-%s" .root.Values.image.registry .c.name) -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* The Secret with a component's TLS files (tls.crt, tls.key, ca.crt): (dict "root" $ "name" "media"). */}}
{{- define "svpl.tlsSecret" -}}
{{- index .root.Values.serviceTls.secretNames .name | default (printf "%s-%s-tls" (include "svpl.fullname" .root) .name) -}}
{{- end -}}

{{- define "svpl.tlsDir" -}}/var/run/svpl/tls{{- end -}}

{{/* Refusals that protect production. */}}
{{- define "svpl.guards" -}}
{{- if and (not .Values.serviceTls.enabled) (not .Values.serviceTls.meshMutualTls) -}}
{{- fail "serviceTls.enabled: the services' gRPC cannot be plaintext in a Kubernetes deployment (personnummer and service tokens cross it); set serviceTls.meshMutualTls=true only where a service mesh does mutual TLS between the pods" -}}
{{- end -}}
{{- if and .Values.serviceTls.enabled .Values.serviceTls.certManager.enabled (not .Values.serviceTls.certManager.issuerRef.name) -}}
{{- fail "serviceTls.certManager.issuerRef.name is required when serviceTls.certManager.enabled: the cert-manager Issuer of the services' CA" -}}
{{- end -}}
{{- range $name, $c := .Values.components -}}
{{- $names := keys ($c.env | default dict) -}}
{{- range $e := ($c.extraEnv | default list) -}}
{{- $names = append $names $e.name -}}
{{- end -}}
{{- range $k := $names -}}
{{- if or (hasPrefix "SVPL_TLS_" (upper $k)) (eq (upper $k) "SVPL_HEALTH_PORT") -}}
{{- fail (printf "components.%s: %s is set by serviceTls (mutual TLS between the services cannot be changed per component)" $name (upper $k)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.developmentLogin -}}
{{- fail "developmentLogin: the development login cannot be enabled in a Kubernetes deployment (it exists only for `make run`)" -}}
{{- end -}}
{{- if ne .Values.identity.siths.revocation "ocsp" -}}
{{- fail "identity.siths.revocation: SITHS revocation checking cannot be turned off in a Kubernetes deployment (off exists only for `make run`)" -}}
{{- end -}}
{{- range $name, $c := .Values.components -}}
{{- range $k, $v := ($c.env | default dict) -}}
{{- if eq (upper $k) "SVPL_DEVELOPMENT_LOGIN" -}}
{{- fail (printf "components.%s.env.SVPL_DEVELOPMENT_LOGIN: the development login cannot be enabled in a Kubernetes deployment" $name) -}}
{{- end -}}
{{- if eq (upper $k) "SVPL_SITHS_REVOCATION" -}}
{{- fail (printf "components.%s.env.SVPL_SITHS_REVOCATION: set identity.siths.revocation (SITHS revocation checking cannot be turned off)" $name) -}}
{{- end -}}
{{- if has (upper $k) (list "SVPL_CAPACITY_PARTICIPANTS" "SVPL_RTC_PORT_MIN" "SVPL_RTC_PORT_MAX") -}}
{{- fail (printf "components.%s.env.%s: set media.capacityParticipants / media.rtcPorts (the chart checks the range against the capacity)" $name (upper $k)) -}}
{{- end -}}
{{- end -}}
{{- range $e := ($c.extraEnv | default list) -}}
{{- if eq (upper $e.name) "SVPL_DEVELOPMENT_LOGIN" -}}
{{- fail (printf "components.%s.extraEnv SVPL_DEVELOPMENT_LOGIN: the development login cannot be enabled in a Kubernetes deployment" $name) -}}
{{- end -}}
{{- if eq (upper $e.name) "SVPL_SITHS_REVOCATION" -}}
{{- fail (printf "components.%s.extraEnv SVPL_SITHS_REVOCATION: set identity.siths.revocation (SITHS revocation checking cannot be turned off)" $name) -}}
{{- end -}}
{{- if has (upper $e.name) (list "SVPL_CAPACITY_PARTICIPANTS" "SVPL_RTC_PORT_MIN" "SVPL_RTC_PORT_MAX") -}}
{{- fail (printf "components.%s.extraEnv %s: set media.capacityParticipants / media.rtcPorts (the chart checks the range against the capacity)" $name (upper $e.name)) -}}
{{- end -}}
{{- if and (regexMatch "(TOKEN|SECRET|PASSWORD|_KEY)$" (upper $e.name)) (hasKey $e "value") -}}
{{- fail (printf "components.%s.extraEnv %s: secrets are referenced (valueFrom.secretKeyRef), never inlined" $name $e.name) -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := ($c.env | default dict) -}}
{{- if regexMatch "(TOKEN|SECRET|PASSWORD|_KEY)$" (upper $k) -}}
{{- fail (printf "components.%s.env.%s: secrets are referenced (extraEnv with valueFrom.secretKeyRef), never inlined" $name $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.media.podDeletionCost.enabled (not .Values.networkPolicy.apiServer.cidrs) (not .Values.networkPolicy.apiServer.ciliumEntity) -}}
{{- fail "networkPolicy.apiServer.cidrs is required while media.podDeletionCost and networkPolicy are enabled: the API server's addresses (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes); on Cilium set networkPolicy.apiServer.ciliumEntity instead" -}}
{{- end -}}
{{- $rtc := .Values.media.rtcPorts -}}
{{- if lt (int $rtc.max) (int $rtc.min) -}}
{{- fail "media.rtcPorts: max must not be below min" -}}
{{- end -}}
{{- if and (not .Values.turn.enabled) (gt (sub (int $rtc.max) (int $rtc.min)) 255) -}}
{{- fail "media.rtcPorts: at most 256 ports when published as hostPorts (turn.enabled=false)" -}}
{{- end -}}
{{- $ports := add1 (sub (int $rtc.max) (int $rtc.min)) -}}
{{- $capacity := int .Values.media.capacityParticipants -}}
{{- if and (not .Values.turn.enabled) (lt (int $ports) $capacity) -}}
{{- fail (printf "media.rtcPorts: %d-%d holds %d ports, fewer than media.capacityParticipants (%d): with turn.enabled=false each participant's peer connection needs its own port of the range" (int $rtc.min) (int $rtc.max) (int $ports) $capacity) -}}
{{- end -}}
{{- end -}}

{{/* The SVPL_* settings of one component (non-secret): (dict "root" $ "c" $c) -> YAML map. */}}
{{- define "svpl.config" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $all := include "svpl.facts" . | fromYaml -}}
{{- $data := dict
  "SVPL_LOG_LEVEL" $root.Values.config.logLevel
  "SVPL_REGION" $root.Values.config.region
  "SVPL_SHUTDOWN_GRACE_SECONDS" (toString (max 1 (sub (int $c.terminationGracePeriodSeconds) 10)))
-}}
{{- if $c.facts.metrics -}}
{{- $_ := set $data "SVPL_METRICS_HOST" "0.0.0.0" -}}
{{- $_ := set $data "SVPL_METRICS_PORT" (include "svpl.metricsPort" .) -}}
{{- end -}}
{{- if eq $c.facts.kind "grpc" -}}
{{- $_ := set $data "SVPL_GRPC_HOST" "0.0.0.0" -}}
{{- $_ := set $data "SVPL_GRPC_PORT" (toString $c.facts.port) -}}
{{- else -}}
{{- $_ := set $data "SVPL_HTTP_HOST" "0.0.0.0" -}}
{{- $_ := set $data "SVPL_HTTP_PORT" (toString $c.facts.port) -}}
{{- end -}}
{{- if has $c.name (list "identity" "gateway") -}}
{{- $_ := set $data "SVPL_DEVELOPMENT_LOGIN" "false" -}}
{{- end -}}
{{- range $callee := $c.facts.calls -}}
{{- $_ := set $data (printf "SVPL_%s_ADDRESS" (upper $callee)) (printf "%s-%s:%v" (include "svpl.fullname" $root) $callee (index $all $callee).port) -}}
{{- end -}}
{{- if eq $c.name "roster" -}}
{{- /* Room placement asks every ready media pod (the headless Service) for its load. */ -}}
{{- $_ := set $data "SVPL_MEDIA_PODS_DNS" (printf "%s-media-pods:%v" (include "svpl.fullname" $root) $all.media.port) -}}
{{- end -}}
{{- if eq $c.name "identity" -}}
{{- $_ := set $data "SVPL_SIGNING_KEYS_DIR" "/var/run/svpl/signing-keys" -}}
{{- $_ := set $data "SVPL_SITHS_REVOCATION" $root.Values.identity.siths.revocation -}}
{{- with $root.Values.identity.siths.ocspUrl -}}
{{- $_ := set $data "SVPL_SITHS_OCSP_URL" . -}}
{{- end -}}
{{- end -}}
{{- if eq $c.name "identity" -}}
{{- include "svpl.nationalLoginConfig" (dict "root" $root "data" $data) -}}
{{- end -}}
{{- if eq $c.name "media" -}}
{{- $_ := set $data "SVPL_CAPACITY_PARTICIPANTS" (toString $root.Values.media.capacityParticipants) -}}
{{- $_ := set $data "SVPL_TEST_ROOM_SHARE" (toString $root.Values.media.testRoomShare) -}}
{{- end -}}
{{- if and (eq $c.name "media") (not $root.Values.turn.enabled) -}}
{{- $_ := set $data "SVPL_RTC_PORT_MIN" (toString $root.Values.media.rtcPorts.min) -}}
{{- $_ := set $data "SVPL_RTC_PORT_MAX" (toString $root.Values.media.rtcPorts.max) -}}
{{- end -}}
{{- if eq $c.name "gateway" -}}
{{- $_ := set $data "SVPL_TRUSTED_PROXIES" (toJson $root.Values.gateway.trustedProxies) -}}
{{- with $root.Values.gateway.publicUrl -}}
{{- $_ := set $data "SVPL_PUBLIC_URL" . -}}
{{- end -}}
{{- end -}}
{{- if and $root.Values.turn.enabled (eq $c.name "gateway") -}}
{{- $_ := set $data "SVPL_TURN_URLS" (printf "turn:%s:3478?transport=udp,turn:%s:3478?transport=tcp" $root.Values.turn.publicHost $root.Values.turn.publicHost) -}}
{{- if $root.Values.turn.tls.enabled -}}
{{- $_ := set $data "SVPL_TURN_URLS" (printf "%s,turns:%s:443?transport=tcp" $data.SVPL_TURN_URLS $root.Values.turn.publicHost) -}}
{{- end -}}
{{- end -}}
{{- if $root.Values.serviceTls.enabled -}}
{{- /* Mutual TLS: the component's mounted Secret; media is verified by its Service's name (called by pod address). */ -}}
{{- $dir := include "svpl.tlsDir" . -}}
{{- $_ := set $data "SVPL_TLS_CERT_FILE" (printf "%s/tls.crt" $dir) -}}
{{- $_ := set $data "SVPL_TLS_KEY_FILE" (printf "%s/tls.key" $dir) -}}
{{- $_ := set $data "SVPL_TLS_CA_FILE" (printf "%s/ca.crt" $dir) -}}
{{- $_ := set $data "SVPL_TLS_RELOAD_SECONDS" (toString $root.Values.serviceTls.reloadSeconds) -}}
{{- $_ := set $data "SVPL_TLS_MEDIA_SERVER_NAME" (printf "%s-media" (include "svpl.fullname" $root)) -}}
{{- if eq $c.facts.kind "grpc" -}}
{{- $_ := set $data "SVPL_HEALTH_PORT" (toString $root.Values.serviceTls.healthPort) -}}
{{- end -}}
{{- end -}}
{{- with $root.Values.tracing.otlpEndpoint -}}
{{- $_ := set $data "SVPL_OTLP_ENDPOINT" . -}}
{{- $_ := set $data "SVPL_TRACE_SAMPLE_RATIO" (toString $root.Values.tracing.sampleRatio) -}}
{{- end -}}
{{- include "svpl.integrationConfig" (dict "root" $root "c" $c "data" $data) -}}
{{- range $k, $v := ($c.env | default dict) -}}
{{- $_ := set $data $k (toString $v) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}


{{- /* The 1177 inbox over the national service platform (roster): its address, logical address and
the mounted client-certificate Secret (values: roster.inbox1177). */ -}}
{{- define "svpl.inbox1177Config" -}}
{{- $v := .root.Values.roster.inbox1177 -}}
{{- if $v.enabled -}}
{{- $_ := set .data "SVPL_INBOX_1177_URL" $v.url -}}
{{- $_ := set .data "SVPL_INBOX_1177_LOGICAL_ADDRESS" $v.logicalAddress -}}
{{- $_ := required "roster.inbox1177.clientCertSecret is required while roster.inbox1177.enabled: the platform knows svpl by its SITHS function certificate" $v.clientCertSecret -}}
{{- $_ := set .data "SVPL_INBOX_1177_CLIENT_CERT_FILE" "/var/run/svpl/inbox-1177/tls.crt" -}}
{{- $_ := set .data "SVPL_INBOX_1177_CLIENT_KEY_FILE" "/var/run/svpl/inbox-1177/tls.key" -}}
{{- $_ := set .data "SVPL_INBOX_1177_CA_FILE" "/var/run/svpl/inbox-1177/ca.crt" -}}
{{- end -}}
{{- end -}}

{{- /* Identity's national-login settings: the Inera test-environment flag, SITHS assurance policies,
and the 1177 login (values: testEnvironment, identity.siths, identity.e1177). */ -}}
{{- define "svpl.nationalLoginConfig" -}}
{{- $root := .root -}}
{{- $_ := set .data "SVPL_TEST_ENVIRONMENT" (toString $root.Values.testEnvironment) -}}
{{- with $root.Values.identity.siths.loa3PolicyOids -}}
{{- $_ := set $.data "SVPL_SITHS_LOA3_POLICY_OIDS" . -}}
{{- end -}}
{{- with $root.Values.identity.siths.loa2PolicyOids -}}
{{- $_ := set $.data "SVPL_SITHS_LOA2_POLICY_OIDS" . -}}
{{- end -}}
{{- $_ := set .data "SVPL_E_SERVICES_1177_PROTOCOL" $root.Values.identity.e1177.protocol -}}
{{- $_ := set .data "SVPL_E_SERVICES_1177_MIN_LOA" (toString $root.Values.identity.e1177.minLoa) -}}
{{- end -}}
{{/*
The outside systems' settings (#16): each either configured (values.schema.json requires its
address while enabled) or switched off explicitly; a service refuses to start otherwise.
Adds to .data (the component's SVPL_* map). (dict "root" $ "c" $c "data" $data)
*/}}
{{- define "svpl.integrationConfig" -}}
{{- $v := .root.Values -}}
{{- $data := .data -}}
{{- if eq .c.name "identity" -}}
{{- $_ := set $data "SVPL_SITHS_ENABLED" (toString $v.identity.siths.enabled) -}}
{{- if $v.identity.siths.enabled -}}
{{- $_ := set $data "SVPL_SITHS_CA_FILES" "/var/run/svpl/siths/ca.crt" -}}
{{- end -}}
{{- $_ := set $data "SVPL_DIRECTORY_BACKEND" "ldap" -}}
{{- $_ := set $data "SVPL_LDAP_URL" $v.identity.directory.ldap.url -}}
{{- $_ := set $data "SVPL_LDAP_BASE_DN" $v.identity.directory.ldap.baseDn -}}
{{- with $v.identity.directory.ldap.bindDn -}}
{{- $_ := set $data "SVPL_LDAP_BIND_DN" . -}}
{{- end -}}
{{- end -}}
{{- if eq .c.name "booking" -}}
{{- $_ := set $data "SVPL_COSMIC_LINK_ENABLED" (toString $v.booking.cosmicLink.enabled) -}}
{{- if $v.booking.cosmicLink.enabled -}}
{{- $_ := set $data "SVPL_COSMIC_LINK_URL" $v.booking.cosmicLink.url -}}
{{- end -}}
{{- end -}}
{{- if eq .c.name "roster" -}}
{{- $_ := set $data "SVPL_PORTAL_BASE_URL" (trimSuffix "/" $v.gateway.publicUrl) -}}
{{- $_ := set $data "SVPL_INBOX_1177_ENABLED" (toString $v.roster.inbox1177.enabled) -}}
{{- include "svpl.inbox1177Config" (dict "root" .root "data" $data) -}}
{{- end -}}
{{- if eq .c.name "gateway" -}}
{{- $_ := set $data "SVPL_HEADER_READ_TIMEOUT_SECONDS" (toString $v.gateway.headerReadTimeoutSeconds) -}}
{{- end -}}
{{- end -}}

{{/* The outside systems' secrets, as env entries of one component: (dict "root" $ "name" "booking"). */}}
{{- define "svpl.integrationSecrets" -}}
{{- $v := .root.Values -}}
{{- $refs := list -}}
{{- if and (eq .name "identity") $v.identity.directory.ldap.bindPasswordSecret.name -}}
{{- $refs = append $refs (list "SVPL_LDAP_BIND_PASSWORD" $v.identity.directory.ldap.bindPasswordSecret) -}}
{{- end -}}
{{- if and (eq .name "booking") $v.booking.cosmicLink.enabled $v.booking.cosmicLink.tokenSecret.name -}}
{{- $refs = append $refs (list "SVPL_COSMIC_LINK_TOKEN" $v.booking.cosmicLink.tokenSecret) -}}
{{- end -}}
{{- if and (eq .name "roster") $v.dialin.enabled $v.dialin.personalCodeKeySecret.name -}}
{{- $refs = append $refs (list "SVPL_PERSONAL_CODE_KEY" $v.dialin.personalCodeKeySecret) -}}
{{- end -}}
{{- range $ref := $refs }}
- name: {{ index $ref 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ (index $ref 1).name }}
      key: {{ (index $ref 1).key }}
{{- end -}}
{{- end -}}

{{/* The pod's scheduling: the component's knobs, else the chart's spread over nodes and zones. */}}
{{- define "svpl.scheduling" -}}
{{- $sel := include "svpl.selector" (dict "root" .root "name" .c.name) | fromYaml -}}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
# Spread replicas over nodes (and zones where there are any) so one node takes few rooms down.
{{- $spread := list }}
{{- range $t := (.c.topologySpreadConstraints | default (list
    (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway")
    (dict "maxSkew" 1 "topologyKey" "topology.kubernetes.io/zone" "whenUnsatisfiable" "ScheduleAnyway"))) }}
{{- $t := deepCopy $t }}
{{- if not (hasKey $t "labelSelector") }}
{{- $_ := set $t "labelSelector" (dict "matchLabels" $sel) }}
{{- end }}
{{- $spread = append $spread $t }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $spread | nindent 2 }}
{{- end -}}
