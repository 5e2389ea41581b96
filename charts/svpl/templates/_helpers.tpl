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
roster: {kind: grpc, port: 50053, health: svpl.roster.v1.RosterService, database: true, metrics: true, calls: [identity, media]}
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

{{/* Refusals that protect production. */}}
{{- define "svpl.guards" -}}
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
{{- if and .Values.networkPolicy.enabled .Values.media.podDeletionCost.enabled (not .Values.networkPolicy.apiServer.cidrs) -}}
{{- fail "networkPolicy.apiServer.cidrs is required while media.podDeletionCost and networkPolicy are enabled: the API server's addresses (kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes)" -}}
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
{{- range $k, $v := ($c.env | default dict) -}}
{{- $_ := set $data $k (toString $v) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}
