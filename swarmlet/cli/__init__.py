"""The swarmlet command line: click commands that render what the core returns."""
