"""The web side of gridwatch: the Open311 GeoReport v2 API, the operator console and its live stream.

``gridwatch api`` serves it (``server.create_app``); it talks to the pipeline only through Kafka
(reports and operator actions out, incidents in), so any number of api processes can run.
"""
