"""The local real environment used by the tests and by `kafka-autopilot demo`."""
