/**
 * Webhooks: the alert as JSON (`alertJson`, docs/notifications.md) POSTed to each configured URL, for chat
 * bridges, paging services and home-made automation. The `Idempotency-Key` header is the alert's id, the
 * same on every retry, so a receiver can drop a second copy.
 */
import { alertJson, type NotifyAlert } from './alert.js';
import { postJson, type PostOptions } from './http-post.js';
import type { DeliveryOutcome } from './outcome.js';

export function sendWebhook(url: string, a: NotifyAlert, opts: PostOptions): Promise<DeliveryOutcome> {
  return postJson(url, alertJson(a), { ...opts, headers: { 'idempotency-key': a.uid, ...opts.headers } });
}
