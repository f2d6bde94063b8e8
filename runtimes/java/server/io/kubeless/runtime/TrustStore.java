package io.kubeless.runtime;

import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;

/**
 * A PKCS12 trust store from a PEM bundle (the host's CA bundle, SSL_CERT_FILE): Java reads no PEM
 * bundle, so Maven in a container trusts the host's extra CA (a corporate proxy's) only this way.
 * usage: TrustStore <bundle.pem> <out.p12> <password>
 */
public final class TrustStore {
    public static void main(String[] args) throws Exception {
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        int n = 0;
        try (InputStream in = new FileInputStream(args[0])) {
            for (Certificate cert : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                store.setCertificateEntry("ca-" + n++, cert);
            }
        }
        try (OutputStream out = new FileOutputStream(args[1])) {
            store.store(out, args[2].toCharArray());
        }
    }
}
