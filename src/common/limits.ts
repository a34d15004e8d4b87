// Size limits of Fleetspeak's protocols, shared by the server and the client.

/** Largest serialized WrappedContactData (one poll or one stream frame): 20 MiB. */
export const MAX_CONTACT_BYTES = 20 * 1024 * 1024;
/** Most messages in one ContactData, in either direction. */
export const MAX_MESSAGES_PER_CONTACT = 100;
/** Largest client-bound message accepted by the admin API, and largest channel frame: 2 MiB. */
export const MAX_MESSAGE_BYTES = 2 * 1024 * 1024;
/** Largest message on the local channel between the client and its daemon/socket services. */
export const MAX_CHANNEL_MESSAGE_BYTES = 2 * 1024 * 1024;
