"""The MQTT wire contract between edge boxes, radars, the central and loudspeakers.

``wire.topics`` spells every topic, ``wire.messages`` describes every payload that is not a
domain model of ``zones`` (alarms and radar tracks are), and ``wire.client`` makes every
MQTT client. Nothing else in the product builds a topic or a client (a test checks it).
"""
