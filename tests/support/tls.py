# -*- test-case-name: tests.test_auth,tests.e2e.test_auth -*-
"""
A throwaway PKI for TLS tests: a CA, a server certificate for localhost /
127.0.0.1, and client certificates naming agents, all written as PEM files.
(Built with cryptography, which pyOpenSSL itself is built on.)
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class PKI:
    pass


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(path, *blobs):
    with open(path, "wb") as f:
        for blob in blobs:
            f.write(blob)
    return path


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn, key, issuer_name, issuer_key, sans=(), ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(issuer_name or x509.Name([
                   x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory, client_names=("alice",), client_sans=(), ca_name="relay test CA"):
    """
    Write a PKI under C{directory}; returns a L{PKI} with the paths:
    C{ca_cert}, C{server_key}, C{server_cert}, C{client_pem[name]} (key and
    certificate in one file), C{client_cert[name]}, and C{other_ca_pem} (a
    client certificate for C{alice} from an unrelated CA).
    """
    os.makedirs(directory, exist_ok=True)
    pki = PKI()
    ca_key = _key()
    ca = _cert(ca_name, ca_key, None, ca_key, ca=True)
    pki.ca_cert = _write(os.path.join(directory, "ca.pem"),
                         ca.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server = _cert("localhost", server_key, ca.subject, ca_key,
                   sans=[x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    pki.server_key = _write(os.path.join(directory, "server.key"), _pem_key(server_key))
    pki.server_cert = _write(os.path.join(directory, "server.pem"),
                             server.public_bytes(serialization.Encoding.PEM))
    pki.client_pem = {}
    pki.client_cert = {}
    for name in client_names:
        key = _key()
        cert = _cert(name, key, ca.subject, ca_key, sans=[x509.DNSName(n) for n in client_sans])
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        pki.client_cert[name] = _write(os.path.join(directory, "client-%s.pem" % name), cert_pem)
        pki.client_pem[name] = _write(os.path.join(directory, "client-%s.key.pem" % name),
                                      _pem_key(key), cert_pem)
    other_key = _key()
    other_ca = _cert("someone else's CA", other_key, None, other_key, ca=True)
    key = _key()
    cert = _cert("alice", key, other_ca.subject, other_key)
    pki.other_ca_pem = _write(os.path.join(directory, "other-alice.key.pem"), _pem_key(key),
                              cert.public_bytes(serialization.Encoding.PEM))
    return pki
