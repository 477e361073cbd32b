# -*- test-case-name: tests.test_tls,tests.e2e.test_auth -*-
"""
Client certificates for C{ssl:} listeners (C{--tls-client-ca}): loading the
CA file, making a strports endpoint require a certificate signed by it, and
the names a certificate gives (its CN and SANs name the agent).
"""

from twisted.python import usage


def load_ca(path):
    """
    The certificates of a PEM file, as pyOpenSSL X509 objects.
    """
    from OpenSSL import crypto

    from relay.compat import load_pem_certificates
    try:
        with open(path, "rb") as f:
            certs = load_pem_certificates(f.read())
    except (OSError, ValueError) as e:
        raise usage.UsageError("--tls-client-ca %s: %s" % (path, str(e) or e.__class__.__name__))
    return [crypto.X509.from_cryptography(c) for c in certs]


def require_client_certificates(endpoint, ca_certs):
    """
    Make the C{ssl:} server endpoint C{endpoint} (from strports) require a
    client certificate signed by one of C{ca_certs}.  Strports has no
    option for it, so the endpoint's context factory is rebuilt with the
    same key and certificate.
    """
    from twisted.internet import ssl
    old = endpoint._sslContextFactory
    endpoint._sslContextFactory = ssl.CertificateOptions(
        privateKey=old.privateKey, certificate=old.certificate,
        extraCertChain=old.extraCertChain, verify=True, caCerts=ca_certs,
        requireCertificate=True)


def certificate_names(cert):
    """
    The CNs and the DNS, e-mail and URI SANs of a pyOpenSSL certificate.
    """
    if cert is None:
        return set()
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    c = cert.to_cryptography()
    names = {a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return names
    for kind in (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier):
        names.update(san.get_values_for_type(kind))
    return names
