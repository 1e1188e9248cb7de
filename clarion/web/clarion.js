// Clarion's notification centre: one module to import.
//   <script type="module" src="https://clarion.example/ui/clarion.js"></script>
//   <clarion-bell token-url="/my/clarion-token"></clarion-bell>
// Elements: <clarion-bell>, <clarion-inbox>, <clarion-preferences>, <clarion-toasts>
// (and <clarion-feed>, which the first two use). The headless client is client.js.

export { ClarionClient, ClarionError, Feed } from './client.js';
export { configure, safeUrl } from './elements/base.js';
export { ClarionBell } from './elements/bell.js';
export { ClarionFeed } from './elements/feed.js';
export { ClarionInbox } from './elements/inbox.js';
export { ClarionPreferences } from './elements/preferences.js';
export { ClarionToasts } from './elements/toasts.js';
