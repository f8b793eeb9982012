/** SigV4-X509 signing core: canonicalization, string to sign, Authorization header, request signing, sign-string. */
export * from "./canonical";
export * from "./string-to-sign";
export * from "./sign-request";
export * from "./sign-string";
