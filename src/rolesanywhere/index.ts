/** IAM Roles Anywhere: ARNs, endpoints and the CreateSession client. */
export * from "./arn";
export * from "./endpoint";
export * from "./service-error";
export * from "./create-session";
export type { ProxySettings } from "./proxy";
