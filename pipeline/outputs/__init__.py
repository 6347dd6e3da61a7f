"""Where data goes out: MQTT publisher, InfluxDB sink, evidence store."""
