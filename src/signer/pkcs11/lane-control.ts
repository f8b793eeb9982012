/**
 * The two shared words of a signing-lane grant (see ./lane-grant). Kept apart so
 * that the main thread, which never loads pkcs11js, can read and write them.
 */

/** Index of the word that says the grant is valid (1); cleared to revoke it. */
export const LANE_VALID = 0;
/** Index of the word the lane sets (1) while it signs. */
export const LANE_BUSY = 1;
