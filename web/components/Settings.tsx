"use client";
import { useState } from "react";
import { DEFAULT_SAMPLING, resolveSampling, type Mode, type SamplingSettings } from "@/lib/conversations";

interface Props {
  sampling: SamplingSettings;
  onChange: (sampling: SamplingSettings) => void;
  mode: Mode;
  chatAvailable: boolean;
  onModeChange: (mode: Mode) => void;
  maxModelLen: number | null;
}

/** The sampling fields the API takes, with their ranges; an out-of-range value is shown, never sent. */
export function Settings({ sampling, onChange, mode, chatAvailable, onModeChange, maxModelLen }: Props) {
  const set = (field: keyof SamplingSettings) => (value: number) => onChange({ ...sampling, [field]: value });
  const contextLen = maxModelLen ?? 4096;
  const maxTokensLimit = Math.max(1, contextLen - 1);
  return (
    <section
      aria-label="Settings"
      className="grid grid-cols-2 gap-3 border-b border-slate-200 bg-slate-50 px-4 py-3 text-sm sm:grid-cols-3 lg:grid-cols-6 dark:border-slate-700 dark:bg-slate-900"
    >
      <label className="flex flex-col gap-1">
        <span className="font-medium">Mode</span>
        <select
          data-testid="mode"
          value={mode}
          onChange={(event) => onModeChange(event.target.value as Mode)}
          className={field}
        >
          <option value="chat" disabled={!chatAvailable}>
            Chat{chatAvailable ? "" : " (no chat template)"}
          </option>
          <option value="completion">Plain completion</option>
        </select>
      </label>
      <NumberField label="Temperature" hint="0 = greedy" value={sampling.temperature} min={0} max={2} step={0.05} onChange={set("temperature")} />
      <NumberField label="Top-k" hint="0 = off" value={sampling.topK} min={0} max={1000} step={1} integer onChange={set("topK")} />
      <NumberField label="Top-p" hint="1 = off" value={sampling.topP} min={0.01} max={1} step={0.01} onChange={set("topP")} />
      <NumberField
        label="Max tokens"
        hint={`1 to ${maxTokensLimit}${sampling.maxTokens === null ? ", auto" : ""}`}
        value={resolveSampling(sampling, contextLen).maxTokens}
        min={1}
        max={maxTokensLimit}
        step={1}
        integer
        onChange={set("maxTokens")}
      />
      <div className="flex items-end">
        <button
          type="button"
          onClick={() => onChange(DEFAULT_SAMPLING)}
          className="h-9 rounded-md border border-slate-300 px-3 hover:bg-slate-200 focus:outline-none focus-visible:ring-2 focus-visible:ring-blue-500 dark:border-slate-600 dark:hover:bg-slate-700"
        >
          Defaults
        </button>
      </div>
    </section>
  );
}

interface FieldProps {
  label: string;
  hint: string;
  value: number;
  min: number;
  max: number;
  step: number;
  integer?: boolean;
  onChange: (value: number) => void;
}

function NumberField({ label, hint, value, min, max, step, integer, onChange }: FieldProps) {
  const [text, setText] = useState(String(value));
  const [shown, setShown] = useState(value);
  if (value !== shown) {
    // The value changed from outside (Defaults): show it.
    setShown(value);
    setText(String(value));
  }
  const parsed = Number(text);
  const valid = text.trim() !== "" && Number.isFinite(parsed) && parsed >= min && parsed <= max && (!integer || Number.isInteger(parsed));
  const id = `setting-${label.toLowerCase().replace(/\W+/g, "-")}`;
  return (
    <label className="flex flex-col gap-1" htmlFor={id}>
      <span className="font-medium">
        {label} <span className="font-normal text-slate-500 dark:text-slate-400">({hint})</span>
      </span>
      <input
        id={id}
        type="number"
        inputMode="decimal"
        value={text}
        min={min}
        max={max}
        step={step}
        aria-invalid={!valid}
        onChange={(event) => {
          setText(event.target.value);
          const next = Number(event.target.value);
          if (event.target.value.trim() !== "" && next >= min && next <= max && (!integer || Number.isInteger(next))) {
            setShown(next);
            onChange(next);
          }
        }}
        onBlur={() => setText(String(value))}
        className={`${field} ${valid ? "" : "border-red-500 ring-2 ring-red-500/40"}`}
      />
    </label>
  );
}

const field =
  "h-9 rounded-md border border-slate-300 bg-white px-2 text-slate-900 focus:border-blue-500 focus:outline-none focus:ring-2 focus:ring-blue-500/40 dark:border-slate-600 dark:bg-slate-800 dark:text-slate-100";
