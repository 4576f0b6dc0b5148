"""Running a job's computation in its own bubblewrap sandbox: the sandbox's command line, its
seccomp filter, the pool of sandboxed processes, and the child program that runs inside.  It
imports nothing of jobs: it runs what it is given."""
