First release of the ``lets-encrypt`` resource for Twisted servers. One INI
file describes the server: a single ``[resources/<id>]`` section of type
``lets-encrypt`` and any number of ``[services/<id>]`` sections of type
``https`` (read-only HTTPS file services), each naming the domains of its
certificate in ``ssl_domains``. The whole file is validated before anything
starts, and every error names its section and option. The resource answers
ACME HTTP-01 challenges on its own small web site (with a ``test.txt``
readiness page and an optional redirect for every other request), obtains
one certificate per distinct set of names from Let's Encrypt or any RFC 8555
CA, keeps the account, keys and certificates in a private state directory
with atomic writes, and can export them as ``privkey.pem``, ``cert.pem``,
``chain.pem`` and ``fullchain.pem`` for other programs. Services start on a
provisional certificate signed by a per-installation signer and switch to
each new certificate in place: new TLS handshakes get it at once, open
connections are not dropped and nothing restarts. Run it with ``twistd
lets-encrypt --config FILE``; ``./dev demo`` shows it working against a
local pebble test CA. Every step is reported as a numbered event.
