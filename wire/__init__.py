"""The MQTT wire contract between edge boxes, radars, the central and loudspeakers.

``wire.topics`` spells every topic (and what each role may use of them: the broker's ACL),
``wire.messages`` describes every payload that is not a domain model of ``zones`` (alarms
and radar tracks are), and ``wire.client`` makes every MQTT client (TLS, credentials).
``wire.pki`` is a site's own certificate authority and ``wire.signing`` the central's
signature on speaker commands. Nothing else in the product builds a topic or a client (a
test checks it).
"""
