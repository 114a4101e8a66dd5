"""Operations around the path: the command line, provisioning, publishing, DLQ tools, the
demo and the local broker."""
