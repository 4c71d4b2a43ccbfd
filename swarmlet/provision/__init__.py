"""Provisioning servers over SSH: probes (facts), plan (pure decisions), ssh (the shell),
bundle (the agent tarball), join (the per-host pipeline that ties them together)."""
