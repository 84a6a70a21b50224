The operations command is installed as ``letsencrypt-resource`` (``python
-m letsencrypt_resource`` still works) with ``--version``, and takes
``--config`` before or after its subcommand. ``letsencrypt-resource testca``
runs a local test CA and prints the lines to paste into a configuration of
your own and the root to trust in a client; getting started walks from a
fresh clone to your own names served by it. A configuration error makes
``twistd`` print one line naming the file, section and option (with the
closest known option for a misspelt one) and exit 1. ``renew`` says what it
did for each set; ``status`` shows when and why each set renews, which
services are on a CA or a provisional certificate, and whether a server is
running; read-only commands check only what they use. An ACME server whose
certificate does not verify is named with ``acme_ca_file``. The demo stops
pebble on any signal, and the README says what the two commands install.
