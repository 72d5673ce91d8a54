"""What is built on the library for people: bench, demo, the Netron viewer, env."""
