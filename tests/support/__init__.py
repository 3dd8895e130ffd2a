"""What the tests share: real services on loopback (``services``), the alarm factory
(``alarms``), one way to wait (``waiting``), the HTTP API on uvicorn (``api``), recorded
scenarios (``scenario``, ``radar``) and protocol peers (``onvif_device``, ``netaudit``).
Test modules import from here, never from each other."""
