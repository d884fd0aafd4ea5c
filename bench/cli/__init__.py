"""The command line of every verb."""
