"""The fixtures every test folder shares: real services on loopback and live cameras."""

pytest_plugins = ["tests.support.services", "tests.support.live", "tests.support.secure"]
