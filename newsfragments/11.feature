``SIGHUP`` (``systemctl reload``) re-reads the configuration: services
added, removed or changed take effect without touching the others, a file
that fails its checks is refused with event 20197 while the running
configuration goes on, and each unchanged service opens again the folder
its ``path`` names. The ``https`` service takes ``hidden_files``.
