// Create, edit and delete a device and its tags: a form per protocol (the keys of gateway/drivers/<p>/config.py
// the console knows; every other key of the document is kept as it is, and the whole document can be edited
// as JSON). The API's 4xx answers are shown on the field they name; a stale If-Match (412) says the device was
// changed by someone else and offers to reload it.

import { useEffect, useState } from "preact/hooks";

import { ApiError, call, protocolOf, seg, type DeviceDoc, type DeviceOut, type TagDoc, type User, atLeast } from "../api";
import { Page } from "../hooks";
import { href, navigate } from "../router";
import { errorPlace, fromInput, PROTOCOLS, TYPES, toInput } from "../form";

interface Props {
  user: User;
  id: string | null; // null: a new device
}

const BLANK: DeviceDoc = {
  id: "",
  enterprise: "",
  site: "",
  area: "",
  line: "",
  protocol: "modbus_tcp",
  host: "127.0.0.1",
  port: 502,
  interval_ms: 1000,
  tags: [],
};

function Field(props: {
  doc: Record<string, unknown>;
  name: string;
  field: string; // the API's name of it, e.g. device.tags[2].address
  label?: string;
  errors: Map<string, string>;
  onChange: (value: unknown) => void;
  disabled?: boolean;
  options?: readonly string[];
  placeholder?: string; // the empty choice of a select: what absent means
  size?: number;
}) {
  const { doc, name, field, errors } = props;
  const error = errors.get(field);
  const id = `f-${field.replace(/[^a-zA-Z0-9_-]/g, "_")}`;
  const common = {
    id,
    name: field,
    "data-field": field,
    "aria-invalid": error ? ("true" as const) : undefined,
    "aria-describedby": error ? `${id}-error` : undefined,
    disabled: props.disabled,
  };
  return (
    <div class={`field${error ? " invalid" : ""}`}>
      <label for={id}>{props.label ?? name}</label>
      {props.options ? (
        <select {...common} value={String(doc[name] ?? "")} onChange={(e) => props.onChange(e.currentTarget.value || undefined)}>
          <option value="">{props.placeholder ?? "—"}</option>
          {props.options.map((o) => (
            <option value={o} key={o}>
              {o}
            </option>
          ))}
        </select>
      ) : (
        <input {...common} value={toInput(doc[name])} size={props.size}
          onInput={(e) => props.onChange(fromInput(e.currentTarget.value))} />
      )}
      {error ? (
        <span class="field-error" id={`${id}-error`} role="alert">
          {error}
        </span>
      ) : null}
    </div>
  );
}

export function EditDevice({ user, id }: Props) {
  const [doc, setDoc] = useState<DeviceDoc | null>(id === null ? structuredClone(BLANK) : null);
  const [etag, setEtag] = useState<string | null>(null);
  const [errors, setErrors] = useState(new Map<string, string>());
  const [banner, setBanner] = useState<{ text: string; conflict?: boolean } | null>(null);
  const [json, setJson] = useState<string | null>(null); // the JSON editor's text while it is open
  const [busy, setBusy] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [loads, setLoads] = useState(0);

  useEffect(() => {
    if (id === null) return;
    let gone = false;
    call<DeviceOut>(`/devices/${seg(id)}`).then(
      (r) => {
        if (gone) return;
        setDoc(r.body.device);
        setEtag(r.etag);
        setErrors(new Map());
        setBanner(null);
        setJson(null);
      },
      (exc: Error) => !gone && setBanner({ text: exc instanceof ApiError ? `${exc.status}: ${exc.detail}` : String(exc) }),
    );
    return () => {
      gone = true;
    };
  }, [id, loads]);

  if (!atLeast(user.role, "engineer")) {
    return (
      <Page title="Edit">
        <p class="error">Your role ({user.role}) may not change devices: ask an engineer or an admin.</p>
      </Page>
    );
  }
  if (doc === null) return <Page title={`Edit ${id}`}>{banner ? <p class="error" role="alert">{banner.text}</p> : <p>Loading…</p>}</Page>;

  const set = (key: string, value: unknown): void => {
    const next = { ...doc } as Record<string, unknown>;
    if (value === undefined) delete next[key];
    else next[key] = value;
    setDoc(next as DeviceDoc);
  };
  const tags = doc.tags ?? [];
  const setTag = (i: number, key: string, value: unknown): void => {
    const next = tags.map((t, j) => {
      if (j !== i) return t;
      const copy = { ...t } as Record<string, unknown>;
      if (value === undefined) delete copy[key];
      else copy[key] = value;
      return copy as TagDoc;
    });
    set("tags", next);
  };
  const protocol = PROTOCOLS[protocolOf(doc)] ?? { device: [], tag: [] };

  const fail = (exc: unknown): void => {
    if (exc instanceof ApiError && exc.status === 412) {
      setBanner({ text: "This device was changed by someone else since you opened it. Reload it to see their change (your edits here are lost).", conflict: true });
      return;
    }
    if (exc instanceof ApiError && exc.field) {
      const place = errorPlace(exc.field, doc);
      if (place !== null) {
        setErrors(new Map([[place, exc.detail]]));
        setBanner({ text: `${exc.status}: ${exc.detail}` });
        requestAnimationFrame(() => (document.querySelector(`[data-field="${CSS.escape(place)}"]`) as HTMLElement | null)?.focus());
        return;
      }
    }
    setErrors(new Map());
    setBanner({ text: exc instanceof ApiError ? `${exc.status}: ${exc.detail}` : String(exc) });
  };

  const save = async (ev: Event): Promise<void> => {
    ev.preventDefault();
    let body = doc;
    if (json !== null) {
      try {
        body = JSON.parse(json) as DeviceDoc;
      } catch (exc) {
        setBanner({ text: `the JSON does not parse: ${(exc as Error).message}` });
        return;
      }
    }
    setBusy(true);
    setErrors(new Map());
    setBanner(null);
    try {
      if (id === null) {
        const r = await call<DeviceOut>("/devices", { method: "POST", body });
        navigate(href("devices", r.body.id));
      } else {
        const r = await call<DeviceOut>(`/devices/${seg(id)}`, { method: "PUT", body, ifMatch: etag });
        setDoc(r.body.device);
        setEtag(r.etag);
        setJson(null);
        setBanner({ text: `saved: revision ${r.body.revision}` });
      }
    } catch (exc) {
      if (json !== null) setDoc(body);
      fail(exc);
    } finally {
      setBusy(false);
    }
  };

  const remove = async (): Promise<void> => {
    if (id === null) return;
    setBusy(true);
    try {
      await call(`/devices/${seg(id)}`, { method: "DELETE", ifMatch: etag });
      navigate("/devices");
    } catch (exc) {
      fail(exc);
    } finally {
      setBusy(false);
      setConfirmDelete(false);
    }
  };

  const f = (name: string, extra: Partial<Parameters<typeof Field>[0]> = {}) => (
    <Field doc={doc} name={name} field={`device.${name}`} errors={errors} onChange={(v) => set(name, v)} {...extra} />
  );

  return (
    <Page
      title={id === null ? "New device" : `Edit ${id}`}
      actions={id !== null ? <a class="button" href={href("devices", id)}>Back to the device</a> : null}
    >
      <form class="edit" onSubmit={(ev) => void save(ev)} noValidate>
        {banner ? (
          <div class={banner.text.startsWith("saved") ? "notice" : "error"} role="alert" data-banner>
            {banner.text}
            {banner.conflict ? (
              <button type="button" onClick={() => setLoads((n) => n + 1)}>
                Reload
              </button>
            ) : null}
          </div>
        ) : null}
        {json === null ? (
          <>
            <fieldset>
              <legend>Device</legend>
              {f("id", { disabled: id !== null })}
              {f("enterprise")}
              {f("site")}
              {f("area")}
              {f("line")}
              {f("protocol", { options: Object.keys(PROTOCOLS), placeholder: "modbus_tcp (default)" })}
              {f("interval_ms", { label: "interval_ms (poll period)" })}
              {f("timeout_ms")}
            </fieldset>
            <fieldset>
              <legend>Connection ({protocolOf(doc)})</legend>
              {protocol.device.map((k) => f(k))}
            </fieldset>
            <fieldset class="tag-editor">
              <legend>Tags</legend>
              <table class="tags">
                <thead>
                  <tr>
                    <th scope="col">name</th>
                    <th scope="col">type</th>
                    {protocol.tag.map((k) => (
                      <th scope="col" key={k}>{k}</th>
                    ))}
                    <th scope="col">unit</th>
                    <th scope="col">writable</th>
                    <th scope="col"><span class="sr-only">remove</span></th>
                  </tr>
                </thead>
                <tbody>
                  {tags.map((t, i) => {
                    const tf = (k: string, extra: Partial<Parameters<typeof Field>[0]> = {}) => (
                      <td key={k}>
                        <Field doc={t} name={k} field={`device.tags[${i}].${k}`} label={`${k} of tag ${i + 1}`} errors={errors}
                          onChange={(v) => setTag(i, k, v)} size={8} {...extra} />
                      </td>
                    );
                    const rowError = errors.get(`device.tags[${i}]`);
                    return (
                      <tr key={i} data-tag-row={i} class={rowError ? "invalid" : ""}>
                        {tf("name")}
                        {tf("type", { options: TYPES })}
                        {protocol.tag.map((k) => tf(k))}
                        {tf("unit")}
                        <td>
                          <input type="checkbox" aria-label={`tag ${i + 1} writable`} checked={t.writable === true}
                            onChange={(e) => setTag(i, "writable", e.currentTarget.checked || undefined)} />
                        </td>
                        <td>
                          <button type="button" aria-label={`remove tag ${t.name || i + 1}`}
                            onClick={() => set("tags", tags.filter((_, j) => j !== i))}>
                            Remove
                          </button>
                          {rowError ? <span class="field-error" role="alert" data-field={`device.tags[${i}]`}>{rowError}</span> : null}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
              <button type="button" onClick={() => set("tags", [...tags, { name: "", type: "float32" }])}>
                Add tag
              </button>
            </fieldset>
          </>
        ) : (
          <div class="field">
            <label for="json">The device document (JSON: every key, also those the form does not show)</label>
            <textarea id="json" name="json" rows={24} value={json} data-field="device" onInput={(e) => setJson(e.currentTarget.value)} />
            {errors.get("device") ? <span class="field-error" role="alert">{errors.get("device")}</span> : null}
          </div>
        )}
        <div class="buttons">
          <button type="submit" class="primary" disabled={busy}>
            {busy ? "Saving…" : id === null ? "Create" : "Save"}
          </button>
          <button type="button" onClick={() => setJson(json === null ? JSON.stringify(doc, null, 2) : null)}>
            {json === null ? "Edit as JSON" : "Back to the form"}
          </button>
          {id !== null ? (
            confirmDelete ? (
              <>
                <button type="button" class="danger" onClick={() => void remove()} disabled={busy}>
                  Really delete {id}
                </button>
                <button type="button" onClick={() => setConfirmDelete(false)}>Keep it</button>
              </>
            ) : (
              <button type="button" class="danger" onClick={() => setConfirmDelete(true)}>
                Delete device
              </button>
            )
          ) : null}
        </div>
      </form>
    </Page>
  );
}
