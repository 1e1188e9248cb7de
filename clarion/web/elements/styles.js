// The elements' own styles (the shared theme is in base.js). Every colour is a custom
// property (--clarion-*), and the parts are named for ::part() styling.

export const FEED_CSS = `
:host { display: flex; flex-direction: column; background: var(--_bg); min-height: 0; }
.header { display: flex; align-items: center; justify-content: space-between; padding: 12px 14px 6px; }
.title { font-size: 16px; margin: 0; font-weight: 600; }
.tabs { display: flex; gap: 2px; padding: 0 10px; border-bottom: 1px solid var(--_border); }
[role=tab] { border: 0; background: none; padding: 8px 8px; cursor: pointer; color: var(--_muted);
  border-bottom: 2px solid transparent; }
[role=tab][aria-selected=true] { color: var(--_fg); border-bottom-color: var(--_accent); font-weight: 600; }
.status { padding: 6px 14px; background: var(--_hover); color: var(--_muted); font-size: 13px; }
.scroller { overflow-y: auto; flex: 1 1 auto; min-height: 0; position: relative; }
:host([compact]) .scroller { max-height: min(70vh, 520px); }
.state { padding: 28px 14px; text-align: center; color: var(--_muted); margin: 0; }
.state p { margin: 0 0 10px; }
.group-header { display: flex; align-items: center; gap: 8px; padding: 10px 14px 4px; }
.group-header h3 { margin: 0; font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--_muted); font-weight: 600; }
.group-header .link { margin-left: auto; font-size: 12px; }
.group-count { font-size: 12px; }
.row { position: relative; display: flex; gap: 10px; padding: 10px 14px; cursor: pointer;
  border-bottom: 1px solid var(--_border); align-items: flex-start; }
.row:hover { background: var(--_hover); }
.row.unread { background: var(--_unread); }
.row:focus-visible { outline-offset: -2px; }
.severity { flex: none; width: 8px; height: 8px; margin-top: 6px; border-radius: 50%; background: var(--_medium); }
.row[data-severity=low] .severity { background: var(--_low); }
.row[data-severity=high] .severity { background: var(--_high); }
.row[data-severity=critical] .severity { background: var(--_critical); box-shadow: 0 0 0 3px color-mix(in srgb, var(--_critical) 25%, transparent); }
.content { flex: 1; min-width: 0; }
.item-title { font-weight: 600; overflow-wrap: anywhere; }
.row:not(.unread) .item-title { font-weight: 500; }
.item-body { color: var(--_muted); overflow-wrap: anywhere; display: -webkit-box; -webkit-line-clamp: 3;
  -webkit-box-orient: vertical; overflow: hidden; white-space: pre-line; }
.meta { font-size: 12px; margin-top: 2px; }
.actions { display: flex; gap: 6px; margin-top: 6px; flex-wrap: wrap; }
.dot { flex: none; width: 8px; height: 8px; border-radius: 50%; background: var(--_accent); margin-top: 6px; }
.menu-button { flex: none; border: 0; background: none; border-radius: 6px; padding: 2px; cursor: pointer;
  color: var(--_muted); display: flex; }
.menu-button:hover { background: var(--_border); }
.menu { position: absolute; right: 10px; z-index: 2; display: flex; flex-direction: column;
  background: var(--_bg); border: 1px solid var(--_border); border-radius: 8px; box-shadow: var(--_shadow);
  padding: 4px; min-width: 180px; }
.menu [role=menuitem] { text-align: start; border: 0; background: none; padding: 6px 10px; border-radius: 5px; cursor: pointer; }
.menu [role=menuitem]:hover, .menu [role=menuitem]:focus { background: var(--_hover); }
.menu [data-action=delete] { color: var(--_critical); }
.more { text-align: center; font-size: 12px; padding: 8px; margin: 0; }
.sentinel { height: 1px; }
.select { margin-top: 3px; }
`;

export const BELL_CSS = `
:host { display: inline-block; position: relative; }
.bell { position: relative; border: 0; background: none; cursor: pointer; padding: 6px; border-radius: 50%;
  color: var(--clarion-bell-color, currentColor); display: flex; }
.bell:hover { background: var(--_hover); }
.bell svg { width: var(--clarion-bell-size, 22px); height: var(--clarion-bell-size, 22px); }
.badge { position: absolute; top: 0; right: 0; min-width: 18px; height: 18px; padding: 0 5px; box-sizing: border-box;
  border-radius: 9px; background: var(--_badge-bg); color: var(--_badge-fg); font-size: 11px; font-weight: 700;
  line-height: 18px; text-align: center; transform: translate(25%, -10%); }
.popover { position: absolute; top: calc(100% + 8px); right: 0; width: min(400px, calc(100vw - 24px));
  background: var(--_bg); border: 1px solid var(--_border); border-radius: var(--_radius);
  box-shadow: var(--_shadow); z-index: var(--clarion-z, 1000); overflow: hidden; display: flex; flex-direction: column; }
:host([align=left]) .popover { right: auto; left: 0; }
`;

export const TOASTS_CSS = `
:host { position: fixed; z-index: var(--clarion-z, 1000); bottom: 16px; right: 16px; display: flex;
  flex-direction: column; gap: 8px; width: min(360px, calc(100vw - 32px)); pointer-events: none; }
:host([position=top-right]) { bottom: auto; top: 16px; }
.region { display: contents; }
.toast { pointer-events: auto; display: flex; gap: 10px; align-items: flex-start; padding: 12px 12px 12px 14px;
  background: var(--_bg); border: 1px solid var(--_border); border-left: 4px solid var(--_medium);
  border-radius: 8px; box-shadow: var(--_shadow); }
.toast[data-kind=success] { border-left-color: var(--clarion-toast-success, #12b76a); }
.toast[data-kind=warning] { border-left-color: var(--_high); }
.toast[data-kind=error] { border-left-color: var(--_critical); }
.body { flex: 1; min-width: 0; }
.title { font-weight: 600; overflow-wrap: anywhere; }
.text { color: var(--_muted); overflow-wrap: anywhere; }
.toast .btn { margin-top: 6px; }
.close { border: 0; background: none; cursor: pointer; color: var(--_muted); padding: 0; display: flex; }
`;
