"""
The floor: the least work an ACME client can do per certificate, as a plain
sequential loop over certbot's C{acme} library, in one process, with no
framework.

For each name: a fresh private key of the key type, a CSR, a new order,
answer HTTP-01 from a minimal in-process HTTP server thread on
127.0.0.1:<challenge port>, poll every 10 ms, finalize, poll every 10 ms,
download the chain.  One ECDSA P-256 account, registered first (timed).
"""

from __future__ import annotations

import argparse
import http.server
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import josepy  # noqa: E402
from acme import challenges, client, crypto_util, messages  # noqa: E402
from common import checkIssued, emitResult, names  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

POLL = 0.01
TOKENS: dict[str, bytes] = {}
PREFIX = "/.well-known/acme-challenge/"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = None
        if self.path.startswith(PREFIX):
            body = TOKENS.get(self.path[len(PREFIX) :])
        if body is None:
            self.send_response(404)
            body = b"not found"
        else:
            self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def newKey(keyType: str):
    if keyType == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--directory-url", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--issuers-file", required=True)
    parser.add_argument("--challenge-port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--key-type", required=True)
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.challenge_port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()

    start = time.perf_counter()
    accountKey = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(accountKey, alg=josepy.ES256, verify_ssl=args.ca_file)
    directory = client.ClientV2.get_directory(args.directory_url, net)
    acme = client.ClientV2(directory, net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    registered = time.perf_counter()

    chains: dict[str, bytes] = {}
    for name in names(args.n, args.run):
        key = newKey(args.key_type)
        keyPEM = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        csrPEM = crypto_util.make_csr(keyPEM, [name])
        order = acme.new_order(csrPEM)
        tokens = []
        for authz in order.authorizations:
            for challb in authz.body.challenges:
                if isinstance(challb.chall, challenges.HTTP01):
                    response, validation = challb.response_and_validation(accountKey)
                    token = challb.chall.encode("token")
                    TOKENS[token] = validation.encode()
                    tokens.append(token)
                    acme.answer_challenge(challb, response)
                    break
        for authz in order.authorizations:
            while True:
                authz, _ = acme.poll(authz)
                if authz.body.status != messages.STATUS_PENDING:
                    break
                time.sleep(POLL)
            if authz.body.status != messages.STATUS_VALID:
                raise SystemExit(f"authorization for {name} is {authz.body.status}")
        for token in tokens:
            TOKENS.pop(token, None)
        order = acme.begin_finalization(order)
        while True:
            body = order.body
            if body.status == messages.STATUS_VALID and body.certificate:
                break
            if body.status == messages.STATUS_INVALID:
                raise SystemExit(f"order for {name} is invalid: {body.error}")
            time.sleep(POLL)
            response = acme._post_as_get(order.uri)
            order = order.update(body=messages.Order.from_json(response.json()))
        chains[name] = acme._post_as_get(order.body.certificate).content
    elapsed = time.perf_counter() - start
    server.shutdown()
    for name, chain in chains.items():
        checkIssued(chain, name, args.issuers_file)
    emitResult(
        {
            "seconds": elapsed,
            "account_seconds": registered - start,
            "certificates": len(chains),
            "verified": len(chains),
        }
    )


if __name__ == "__main__":
    main()
