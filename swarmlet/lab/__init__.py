"""The local lab: "bare servers" as containers, each with sshd, dockerd and python3."""
