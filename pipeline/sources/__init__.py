"""Where data comes in: MQTT bridge and telemetry parser, camera capture and service, demo RTSP server."""
