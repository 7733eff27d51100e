"""Root conftest: every test directory gets Pulse's real-emulator fixtures."""

pytest_plugins = [
    "pulse_dev.testing",
    "pulse_dev.jwks",
    "pulse_dev.redis_fixtures",
    "pulse_dev.browser",
    "pulse_dev.figures",
]
