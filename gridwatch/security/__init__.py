"""Credentials and transport security for the MQTT side (device passwords, ACLs, TLS certificates)."""
