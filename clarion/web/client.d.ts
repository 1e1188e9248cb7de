// Types of Clarion's notification centre (hand-written; the JavaScript has JSDoc too).

export type Severity = 'low' | 'medium' | 'high' | 'critical';

export interface NotificationAction {
  id: string;
  label: string;
  url: string | null;
}

export interface Notification {
  id: string;
  seq: number;
  category: string;
  type: string | null;
  severity: Severity;
  title: string;
  body: string | null;
  url: string | null;
  actor_id: string | null;
  metadata: Record<string, unknown>;
  collapse_key: string | null;
  expires_at: string | null;
  created_at: string;
  seen_at: string | null;
  read_at: string | null;
  archived_at: string | null;
  snoozed_until?: string | null;
  actions?: NotificationAction[];
}

export interface Counts {
  total: number;
  by_category: Record<string, number>;
  unseen?: number;
}

export interface FeedFilter {
  category?: string;
  severity?: Severity;
  status?: 'unread' | 'read' | 'unseen' | 'all';
  archived?: boolean;
  snoozed?: boolean;
}

export interface Page {
  items: Notification[];
  next_cursor: string | null;
}

/** A live event: `notification.created`, `notification.updated`, `notification.unsnoozed`,
 * `unread_count`, `heartbeat`, `resync`. `local` marks a change this tab made itself. */
export interface LiveEvent {
  type: string;
  cursor?: number;
  data?: any;
  local?: boolean;
}

export type Status = 'idle' | 'connecting' | 'live' | 'waiting' | 'offline' | 'paused' | 'stopped';

export interface ClientOptions {
  /** The API's base URL; default: the origin the module was loaded from. */
  apiUrl?: string;
  token?: string;
  /** Called for a (fresh) token: at start, on a 401, on close 4401, before expiry. */
  getToken?: () => string | Promise<string>;
  transport?: 'auto' | 'websocket' | 'sse';
  /** One connection for all tabs of the origin (Web Locks + BroadcastChannel). Default true. */
  shareAcrossTabs?: boolean;
  /** Close the stream while no tab is visible (after this many ms; true = 5000). */
  pauseWhenHidden?: boolean | number;
}

export interface ClientEvents {
  count: Counts;
  status: Status;
  notification: Notification;
  event: LiveEvent;
  resync: LiveEvent;
}

export class ClarionError extends Error {
  status: number;
  problem: { type?: string; title?: string; detail?: string; [k: string]: unknown };
  /** The problem's slug: 'preference-locked', 'no-target', 'validation-error', ... */
  kind: string;
  retryAfter: number | null;
}

export class Feed {
  constructor(client: ClarionClient, filter?: FeedFilter, pageSize?: number);
  items: Notification[];
  nextCursor: string | null;
  state: 'idle' | 'loading' | 'ready' | 'error';
  error: unknown;
  filter: FeedFilter;
  load(): Promise<void>;
  more(): Promise<void>;
  setFilter(filter: FeedFilter): Promise<void>;
  on(type: 'change', fn: () => void): () => void;
  destroy(): void;
}

export class ClarionClient {
  constructor(options?: ClientOptions);
  readonly apiUrl: string;
  counts: Counts | null;
  status: Status;
  readonly leader: boolean;
  on<K extends keyof ClientEvents>(type: K, fn: (value: ClientEvents[K]) => void): () => void;
  connect(): this;
  disconnect(): void;
  useServiceWorker(): this;
  request<T = unknown>(method: string, path: string, o?: { query?: Record<string, unknown>; body?: unknown }): Promise<T>;
  list(filter?: FeedFilter & { limit?: number; cursor?: string }): Promise<Page>;
  feed(filter?: FeedFilter, pageSize?: number): Feed;
  get(id: string): Promise<Notification>;
  update(id: string, patch: { read?: boolean; archived?: boolean; seen?: boolean; snoozed_until?: string | null }): Promise<Notification>;
  markRead(id: string, read?: boolean): Promise<Notification>;
  archive(id: string, archived?: boolean): Promise<Notification>;
  snooze(id: string, until: Date | string | null): Promise<Notification>;
  remove(id: string): Promise<null>;
  markSeen(ids: string[]): Promise<{ updated: number }>;
  markSeenUpTo(cursor: number): Promise<{ updated: number }>;
  readAll(category?: string): Promise<{ updated: number }>;
  deleteRead(category?: string): Promise<{ updated: number }>;
  action(id: string, actionId: string): Promise<{ url: string | null }>;
  unreadCount(): Promise<Counts>;
  /** Show counts had elsewhere until the stream's own arrive (false: it has some already). */
  offerCounts(counts: Counts | null): boolean;
  preferences(): Promise<any>;
  savePreferences(body: any): Promise<any>;
  vapidKey(): Promise<string>;
  pushSubscriptions(): Promise<Array<{ id: string; endpoint: string; user_agent: string | null; created_at: string }>>;
  addPushSubscription(subscription: PushSubscription | PushSubscriptionJSON): Promise<unknown>;
  removePushSubscription(endpoint: string): Promise<null>;
  sendTest(channel: 'in_app' | 'email' | 'push' | 'all'): Promise<{ request_id: string; channels: string[] }>;
}

/** The client every element without a client of its own uses. */
export function configure(clientOrOptions: ClarionClient | ClientOptions): ClarionClient;
/** A notification url that may be followed (http(s) or relative), absolute; else null. */
export function safeUrl(url: unknown, base?: string): string | null;

export class ClarionBell extends HTMLElement { client: ClarionClient; show(focus?: boolean): void; close(refocus?: boolean): void; }
export class ClarionFeed extends HTMLElement { client: ClarionClient; filter: FeedFilter; }
export class ClarionInbox extends HTMLElement { client: ClarionClient; }
export class ClarionPreferences extends HTMLElement { client: ClarionClient; }
export class ClarionToasts extends HTMLElement { client: ClarionClient; show(n: Partial<Notification>): HTMLElement; }

declare global {
  interface HTMLElementTagNameMap {
    'clarion-bell': ClarionBell;
    'clarion-feed': ClarionFeed;
    'clarion-inbox': ClarionInbox;
    'clarion-preferences': ClarionPreferences;
    'clarion-toasts': ClarionToasts;
  }
}
