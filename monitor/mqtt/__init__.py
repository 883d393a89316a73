"""The MQTT contract: topics, payloads, the broker link, and the document generated from them.

``docs/mqtt.md`` (``python -m monitor.mqtt.doc``) is the reference for dashboards, gateways and
broker administrators; this package is the only code that speaks to a broker (aiomqtt stays in
``client``).
"""
