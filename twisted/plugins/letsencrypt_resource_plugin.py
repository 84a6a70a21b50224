from twisted.application.service import ServiceMaker

letsEncrypt = ServiceMaker(
    "lets-encrypt",
    "letsencrypt_resource.tap",
    "File services with automatic ACME (Let's Encrypt) certificates.",
    "lets-encrypt",
)
