{{/*
Media networking and availability (docs/NETWORK.md): what a meeting needs from the cluster so that
no scale-down, node upgrade or coturn restart cuts it, and what the media autoscaler needs to see.
*/}}

{{/* The longest meeting a booking can have, in seconds: services/booking/model.py
MAX_DURATION_MINUTES x 60 (tests/charts/test_network.py fails when the two differ). */}}
{{- define "svpl.longestMeetingSeconds" -}}28800{{- end -}}

{{/* A draining media or coturn pod keeps its meetings this long at least: the longest meeting and
ten minutes for it to start late and end late. */}}
{{- define "svpl.minimumMeetingGraceSeconds" -}}{{ add (include "svpl.longestMeetingSeconds" .) 600 }}{{- end -}}

{{/* The most coturn replicas the relayed participants of media at its largest need. */}}
{{- define "svpl.turnMaxReplicas" -}}
{{- $media := include "svpl.component" (dict "root" . "name" "media") | fromYaml -}}
{{- $pods := int $media.replicas -}}
{{- if $media.autoscaling.enabled -}}
{{- $pods = int $media.autoscaling.maxReplicas -}}
{{- end -}}
{{- $participants := mul $pods (int .Values.media.capacityParticipants) -}}
{{- $per := int .Values.turn.autoscaling.participantsPerReplica -}}
{{- max (int .Values.turn.replicas) (div (add $participants (sub $per 1)) $per) -}}
{{- end -}}

{{- define "svpl.networkGuards" -}}
{{- $media := include "svpl.component" (dict "root" . "name" "media") | fromYaml -}}
{{- $minimum := int (include "svpl.minimumMeetingGraceSeconds" .) -}}
{{- if and $media.enabled (lt (int $media.terminationGracePeriodSeconds) $minimum) -}}
{{- fail (printf "components.media.terminationGracePeriodSeconds: %d is shorter than the longest meeting a booking can have (%d s) and 600 s of slack: at least %d, or a drain cuts meetings" (int $media.terminationGracePeriodSeconds) (int (include "svpl.longestMeetingSeconds" .)) $minimum) -}}
{{- end -}}
{{- if and $media.enabled $media.autoscaling.enabled $media.autoscaling.loadMetric (not (or .Values.metrics.serviceMonitor.enabled .Values.metrics.scrapeAnnotations)) -}}
{{- fail (printf "components.media.autoscaling.loadMetric (%s) is fed by Prometheus scraping media: set metrics.serviceMonitor.enabled=true (Prometheus Operator) or metrics.scrapeAnnotations=true, and serve it with the prometheus-adapter rule in charts/prometheus-adapter-values.yaml; or remove loadMetric (CPU only)" $media.autoscaling.loadMetric.name) -}}
{{- end -}}
{{- if .Values.turn.enabled -}}
{{- $relay := add1 (sub (int .Values.turn.relayPorts.max) (int .Values.turn.relayPorts.min)) -}}
{{- if lt (int .Values.turn.relayPorts.max) (int .Values.turn.relayPorts.min) -}}
{{- fail "turn.relayPorts: max must not be below min" -}}
{{- end -}}
{{- if gt (int .Values.turn.autoscaling.participantsPerReplica) (int $relay) -}}
{{- fail (printf "turn.autoscaling.participantsPerReplica: %d is more than the %d relay ports of turn.relayPorts (each relayed participant holds one)" (int .Values.turn.autoscaling.participantsPerReplica) (int $relay)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
