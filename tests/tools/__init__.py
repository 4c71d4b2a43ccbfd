"""Tools the tests and benchmarks drive the product with (never shipped, never imported by swarmlet)."""
