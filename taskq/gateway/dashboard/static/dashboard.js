// taskq dashboard: live run events and group progress over server-sent events.
// Plain JS, no build step. Streams are same-origin and carry the session cookie.
"use strict";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
// The order a group's bar shows its statuses in (models.RunStatus).
const ORDER = ["queued", "running", "action_required", "completed", "failed", "cancelling", "cancelled"];

function liveRun(section) {
  const list = document.getElementById("events");
  const badge = document.getElementById("run-status");
  const source = new EventSource(section.dataset.events);
  source.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    const item = document.createElement("li");
    if (event.type === "task_run.state") {
      const status = event.run.status;
      item.textContent = `${event.run.modified_at}  status: ${status}`;
      badge.textContent = status;
      badge.className = `status s-${status}`;
      // The stream replays the run's history first; a change made after the page was
      // drawn draws it again (its worker, its question, its output and errors).
      if (event.run.modified_at > section.dataset.modified && status !== section.dataset.status) {
        source.close();
        setTimeout(() => window.location.reload(), TERMINAL.has(status) ? 800 : 300);
      } else if (TERMINAL.has(status)) {
        source.close();
      }
    } else if (event.type === "error") {
      item.textContent = `stream error: ${event.error.message}`;
    } else {
      item.textContent = `${event.timestamp || ""}  ${event.message || event.type}`;
    }
    list.appendChild(item);
  };
}

function liveGroup(section) {
  const bar = document.getElementById("group-bar");
  const message = document.getElementById("group-message");
  let pending = null;
  const refresh = async () => {
    pending = null;
    const response = await fetch(section.dataset.status, { credentials: "same-origin" });
    if (!response.ok) return;
    const status = await response.json();
    message.textContent = status.status_message;
    const counts = status.task_run_status_counts;
    bar.replaceChildren(...ORDER.filter((name) => counts[name]).map((name) => {
      const span = document.createElement("span");
      span.className = `s-${name}`;
      span.style.flexGrow = counts[name];
      span.textContent = span.title = `${name} ${counts[name]}`;
      return span;
    }));
    if (!status.is_active) {
      source.close();
      // Every run has ended: draw the page again for the runs' final statuses.
      setTimeout(() => window.location.reload(), 500);
    }
  };
  const source = new EventSource(section.dataset.events);
  // Many runs may end at once: redraw at most four times a second.
  source.onmessage = () => { if (!pending) pending = setTimeout(refresh, 250); };
}

document.addEventListener("DOMContentLoaded", () => {
  const run = document.getElementById("run");
  // A finished run's history is streamed once too; the stream is closed at its end.
  if (run) liveRun(run);
  const group = document.getElementById("group");
  if (group && group.dataset.active === "true") liveGroup(group);
});
