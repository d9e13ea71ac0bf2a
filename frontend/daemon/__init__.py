"""The daemon: topology of sockets and the supervisor of every child process."""
