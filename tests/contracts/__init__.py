"""Contract suites: behaviour every implementation of an interface must show (reused per implementation)."""
