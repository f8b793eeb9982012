#!/usr/bin/env python3
"""An independent SigV4-X509 signer for tests of the ra-agent emulator.

It shares no code with ra-agent: the canonical request is built here with the
Python standard library, the signature is made by the openssl CLI
(RSA PKCS#1 v1.5 / ECDSA DER over SHA-256), and requests are sent with
http.client. Tests use it to prove that the emulator accepts what a correct
third-party signer produces, and to produce correctly signed requests that
break exactly one rule.

Input (stdin): {"requests": [SPEC, ...]}. SPEC fields:
  endpoint        "http://127.0.0.1:PORT" (host header, and where to send)
  certificate     leaf certificate PEM file
  privateKey      private key PEM file (signs)
  chain           [PEM files] sent in X-Amz-X509-Chain (optional)
  query           {name: value} query parameters (the ARNs, usually)
  bodyParams      {name: value} JSON body (default {"durationSeconds": 3600})
  rawBody         body text, instead of bodyParams
  region          scope region (default us-east-1)
  service         scope service (default rolesanywhere)
  algorithm       override the algorithm (default from the key type)
  serial          override the Credential= serial (decimal text)
  amzDate         override X-Amz-Date (default now), YYYYMMDDTHHMMSSZ
  scopeDate       override the scope date (default the date of amzDate)
  omitSignedHeaders  [names] sent but left out of SignedHeaders
  extraHeaders    {name: value} more headers, signed
  send            true: send the request and report the response
Output (stdout): [{"method", "target", "headers": [[name, value]], "body",
  "canonicalRequest", "stringToSign", "response": {"status", "headers", "body"}}]
"""
import base64
import datetime
import functools
import hashlib
import http.client
import json
import subprocess
import sys
import urllib.parse


def openssl(args, data=None):
    return subprocess.run(["openssl"] + args, input=data, capture_output=True, check=True).stdout


@functools.lru_cache(maxsize=None)
def cert_der(pem_file):
    return openssl(["x509", "-in", pem_file, "-outform", "DER"])


@functools.lru_cache(maxsize=None)
def cert_serial_decimal(pem_file):
    text = openssl(["x509", "-in", pem_file, "-noout", "-serial"]).decode().strip()
    return str(int(text.split("=", 1)[1], 16))


@functools.lru_cache(maxsize=None)
def key_type(key_file):
    text = openssl(["pkey", "-in", key_file, "-noout", "-text_pub"]).decode()
    if "Modulus" in text:
        return "RSA"
    if "ASN1 OID" in text or "NIST CURVE" in text:
        return "EC"
    raise SystemExit("unsupported key type in " + key_file)


def quote(s):
    # SigV4: percent-encode everything except unreserved characters.
    return urllib.parse.quote(s, safe="-_.~")


def sign(spec):
    endpoint = urllib.parse.urlsplit(spec["endpoint"])
    host = endpoint.netloc
    amz_date = spec.get("amzDate") or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope_date = spec.get("scopeDate") or amz_date[:8]
    region = spec.get("region", "us-east-1")
    service = spec.get("service", "rolesanywhere")
    ktype = key_type(spec["privateKey"])
    algorithm = spec.get("algorithm") or ("AWS4-X509-RSA-SHA256" if ktype == "RSA" else "AWS4-X509-ECDSA-SHA256")
    serial = spec.get("serial") or cert_serial_decimal(spec["certificate"])

    if "rawBody" in spec:
        body = spec["rawBody"].encode()
    else:
        body = json.dumps(spec.get("bodyParams", {"durationSeconds": 3600}), separators=(",", ":")).encode()

    query_items = sorted((quote(k), quote(v)) for k, v in spec.get("query", {}).items())
    canonical_query = "&".join(k + "=" + v for k, v in query_items)
    path = "/sessions"

    headers = {
        "Content-Type": "application/json",
        "Host": host,
        "X-Amz-Date": amz_date,
        "X-Amz-X509": base64.b64encode(cert_der(spec["certificate"])).decode(),
    }
    if spec.get("chain"):
        headers["X-Amz-X509-Chain"] = ",".join(base64.b64encode(cert_der(f)).decode() for f in spec["chain"])
    headers.update(spec.get("extraHeaders", {}))

    omit = {h.lower() for h in spec.get("omitSignedHeaders", [])}
    signed = sorted((k.lower(), " ".join(v.strip().split())) for k, v in headers.items() if k.lower() not in omit)
    canonical_headers = "".join(k + ":" + v + "\n" for k, v in signed)
    signed_headers = ";".join(k for k, _ in signed)
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical_request = "\n".join(["POST", path, canonical_query, canonical_headers, signed_headers, payload_hash])

    scope = "/".join([scope_date, region, service, "aws4_request"])
    string_to_sign = "\n".join([algorithm, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    signature = openssl(["dgst", "-sha256", "-sign", spec["privateKey"]], string_to_sign.encode()).hex()
    headers["Authorization"] = "%s Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (algorithm, serial, scope, signed_headers, signature)

    target = path + ("?" + canonical_query if canonical_query else "")
    out = {
        "method": "POST",
        "target": target,
        "headers": [[k, v] for k, v in headers.items()],
        "body": body.decode(),
        "canonicalRequest": canonical_request,
        "stringToSign": string_to_sign,
    }
    if spec.get("send"):
        conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port, timeout=30)
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        out["response"] = {"status": resp.status, "headers": dict(resp.getheaders()), "body": resp.read().decode()}
        conn.close()
    return out


def main():
    specs = json.load(sys.stdin)["requests"]
    json.dump([sign(s) for s in specs], sys.stdout)


if __name__ == "__main__":
    main()
