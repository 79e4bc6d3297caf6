// Alarms (the gateways' edge alarms, stored by ingestion: GET /history/alarms): active ones and their history
// under a UNS path, over a range, in ISA-18.2's states; operators acknowledge them (POST /alarms/ack), one
// or every one shown, with a comment. Reloaded every 10 s, so another operator's acknowledgement shows.

import { useEffect, useState } from "preact/hooks";

import { ackBatches, actorName, alarmState, sortAlarms, STATE_TEXT, type AlarmRow } from "../alarms";
import { allDevices, ApiError, atLeast, call, get, query, type User } from "../api";
import { ErrorBox, Page, useLoad, useNow } from "../hooks";
import type { Route } from "../router";
import { navigate } from "../router";
import { formatAge, formatValue } from "../uns";

const RANGES: [string, number][] = [["1 h", 3_600_000], ["24 h", 86_400_000], ["7 d", 604_800_000]];
const STATE_CLASS = { "active-unacked": "bad", "active-acked": "uncertain", "cleared-unacked": "uncertain", normal: "good" };

export function Alarms({ route, user }: { route: Route; user: User }) {
  const path = route.params.get("path") ?? "";
  const activeOnly = route.params.get("active") === "true";
  const unackedOnly = route.params.get("acked") === "false";
  const span = Number(route.params.get("span") ?? 86_400_000) || 86_400_000;
  const canAck = atLeast(user.role, "operator");
  const [text, setText] = useState(path);
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [answer, setAnswer] = useState<{ ok: boolean; text: string } | null>(null);
  const now = useNow(5000);
  const list = useLoad(async (signal) => {
    // every enterprise unless a path is given: the API answers one path (a prefix) at a time
    const roots = path ? [path] : [...new Set((await allDevices(signal)).map((d) => d.device.enterprise))];
    const out: AlarmRow[] = [];
    for (const root of roots) {
      try {
        const r = await get<{ alarms: AlarmRow[] }>(`/history/alarms${query({
          tag: root, from: new Date(Date.now() - span).toISOString(), active: activeOnly ? "true" : undefined,
          acked: unackedOnly ? "false" : undefined })}`, signal);
        out.push(...r.alarms);
      } catch (exc) {
        if (!(exc instanceof ApiError && exc.status === 404)) throw exc; // no history under it (yet)
      }
    }
    return sortAlarms(out);
  }, [path, activeOnly, unackedOnly, span]);
  const { reload } = list;
  useEffect(() => {
    const t = setInterval(reload, 10_000);
    return () => clearInterval(t);
  }, [reload]);
  const go = (p: Record<string, string | undefined>): void =>
    navigate(`/alarms${query({ path, active: activeOnly ? "true" : undefined, acked: unackedOnly ? "false" : undefined,
      span: String(span), ...p })}`);
  const rows = list.data ?? [];
  const waiting = ackBatches(rows);
  const nWaiting = waiting.reduce((s, b) => s + b.length, 0);
  const acknowledge = async (batches: ReturnType<typeof ackBatches>, what: string): Promise<void> => {
    setBusy(true);
    setAnswer(null);
    try {
      let fresh = 0;
      let already = 0;
      for (const alarms of batches) {
        const r = await call<{ acknowledged: { already: boolean }[] }>("/alarms/ack", {
          method: "POST", body: { alarms, comment: comment.trim() } });
        for (const a of r.body.acknowledged) a.already ? already++ : fresh++;
      }
      setAnswer({ ok: true, text: `${what}: ${fresh} acknowledged${already ? `, ${already} already were (by someone else)` : ""}` });
      setComment("");
    } catch (exc) {
      setAnswer({ ok: false, text: exc instanceof ApiError ? `${exc.status}: ${exc.detail}` : String(exc) });
    } finally {
      setBusy(false);
      reload();
    }
  };
  return (
    <Page title="Alarms" actions={<button type="button" onClick={reload}>Reload</button>}>
      <form class="filters" onSubmit={(e) => (e.preventDefault(), go({ path: text.trim() || undefined }))}>
        <label>
          Under (a UNS path; empty: everything)
          <input name="path" size={40} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button type="submit">Show</button>
        <label class="check">
          <input type="checkbox" name="active" checked={activeOnly} onChange={(e) => go({ active: e.currentTarget.checked ? "true" : undefined })} />
          Active only
        </label>
        <label class="check">
          <input type="checkbox" name="unacked" checked={unackedOnly} onChange={(e) => go({ acked: e.currentTarget.checked ? "false" : undefined })} />
          Unacknowledged only
        </label>
        {RANGES.map(([label, ms]) => (
          <button type="button" key={label} aria-pressed={span === ms} onClick={() => go({ span: String(ms) })}>last {label}</button>
        ))}
        <span class="summary">{rows.filter((a) => a.active).length} active, {nWaiting} unacknowledged, {rows.length} in range</span>
      </form>
      {canAck ? (
        <form class="filters ack" onSubmit={(e) => (e.preventDefault(), void acknowledge(waiting, "all shown"))}>
          <label>
            Comment (kept with the acknowledgement)
            <input name="comment" size={40} maxLength={500} value={comment} onInput={(e) => setComment(e.currentTarget.value)} />
          </label>
          <button type="submit" disabled={busy || !nWaiting}>Acknowledge all shown ({nWaiting})</button>
          {answer ? <output class={answer.ok ? "ok" : "error-text"} role="status">{answer.text}</output> : null}
        </form>
      ) : null}
      <ErrorBox error={list.error} />
      <table class="list alarms">
        <thead>
          <tr>
            <th scope="col">tag</th><th scope="col">alarm</th><th scope="col">state</th><th scope="col">raised</th>
            <th scope="col">value / limit</th><th scope="col">cleared</th><th scope="col">severity</th>
            <th scope="col">acknowledged</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((a) => {
            const state = alarmState(a);
            return (
              <tr key={`${a.tag}|${a.alarm}|${a.raised_at ?? a.cleared_at}`} data-alarm={`${a.tag}|${a.alarm}`} data-state={state}
                class={a.active ? "tag-bad" : ""}>
                <th scope="row"><a href={`/trends${query({ tag: a.tag })}`}>{a.tag}</a></th>
                <td>{a.alarm}</td>
                <td><span class={`q q-${STATE_CLASS[state]}`}>{STATE_TEXT[state]}</span></td>
                <td title={a.raised_at ?? undefined}>{a.raised_at ? `${formatAge(Date.parse(a.raised_at), now)} ago` : "—"}</td>
                <td>{formatValue(a.raised_value)} / {formatValue(a.raised_limit)}</td>
                <td title={a.cleared_at ?? undefined}>{a.cleared_at ? `${formatAge(Date.parse(a.cleared_at), now)} ago (${formatValue(a.cleared_value)})` : "—"}</td>
                <td>{a.severity ?? "—"}</td>
                <td class="ack-cell" title={a.ack_comment || undefined}>
                  {a.acked_at ? (
                    <span>by {actorName(a.acked_by)}, {formatAge(Date.parse(a.acked_at), now)} ago{a.ack_comment ? `: ${a.ack_comment}` : ""}</span>
                  ) : a.raised_at && canAck ? (
                    <button type="button" disabled={busy} aria-label={`Acknowledge ${a.alarm} alarm of ${a.tag}`}
                      onClick={() => void acknowledge([[{ tag: a.tag, alarm: a.alarm, raised_at: a.raised_at as string }]], `${a.alarm} of ${a.tag}`)}>
                      Acknowledge
                    </button>
                  ) : a.raised_at ? "not yet" : "—"}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {list.data && !rows.length ? <p class="empty">No alarm in this range.</p> : null}
      {!canAck ? <p class="muted">Acknowledging needs the operator role or above.</p> : null}
    </Page>
  );
}
