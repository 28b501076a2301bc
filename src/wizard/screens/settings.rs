//! Screen 4: registry, networks, VIP, data root and the image's own parameters.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Body, edit_text, panel};
use crate::wizard::Action;
use crate::wizard::event::Key;
use crate::wizard::state::{SettingField, SettingsForm, State};
use crate::wizard::widgets::{self, Theme};

/// The label of a field.
pub fn label(state: &State, field: SettingField) -> String {
    match field {
        SettingField::RegistryDomain => "Registry domain".to_string(),
        SettingField::RegistryPort => "Registry port".to_string(),
        SettingField::PodCidr => "Pod CIDR".to_string(),
        SettingField::ServiceCidr => "Service CIDR".to_string(),
        SettingField::Vip => "API VIP".to_string(),
        SettingField::DataRoot => "Data root".to_string(),
        SettingField::Param(i) => state
            .image
            .params
            .get(i)
            .map(|p| p.name.clone())
            .unwrap_or_default(),
    }
}

fn help_of(state: &State, field: SettingField) -> String {
    match field {
        SettingField::RegistryDomain => {
            "Name of the cluster's registry, put in /etc/hosts on every host.".to_string()
        }
        SettingField::RegistryPort => "Port of the registry on the first master.".to_string(),
        SettingField::PodCidr => "Pod network: must not overlap the hosts' networks.".to_string(),
        SettingField::ServiceCidr => "Service network: must not overlap either.".to_string(),
        SettingField::Vip => "Optional virtual IP for the API server with 3+ masters.".to_string(),
        SettingField::DataRoot => "Where airlock keeps its files on every host.".to_string(),
        SettingField::Param(i) => state
            .image
            .params
            .get(i)
            .map(|p| format!("{} (default {:?})", p.help, p.default))
            .unwrap_or_default(),
    }
}

fn value_mut<'a>(
    form: &'a mut SettingsForm,
    state_params: &[String],
    field: SettingField,
) -> Option<&'a mut String> {
    Some(match field {
        SettingField::RegistryDomain => &mut form.registry_domain,
        SettingField::RegistryPort => &mut form.registry_port,
        SettingField::PodCidr => &mut form.pod_cidr,
        SettingField::ServiceCidr => &mut form.service_cidr,
        SettingField::Vip => &mut form.vip,
        SettingField::DataRoot => &mut form.data_root,
        SettingField::Param(i) => form.params.get_mut(state_params.get(i)?)?,
    })
}

fn value(state: &State, field: SettingField) -> String {
    let s = &state.settings;
    match field {
        SettingField::RegistryDomain => s.registry_domain.clone(),
        SettingField::RegistryPort => s.registry_port.clone(),
        SettingField::PodCidr => s.pod_cidr.clone(),
        SettingField::ServiceCidr => s.service_cidr.clone(),
        SettingField::Vip => s.vip.clone(),
        SettingField::DataRoot => s.data_root.clone(),
        SettingField::Param(i) => state
            .image
            .params
            .get(i)
            .and_then(|p| s.params.get(&p.name))
            .cloned()
            .unwrap_or_default(),
    }
}

/// Up/Down/Tab move between fields; typing edits.
pub fn on_key(state: &mut State, key: Key) -> Option<Action> {
    let fields = SettingsForm::fields(&state.image.params);
    let names: Vec<String> = state.image.params.iter().map(|p| p.name.clone()).collect();
    let s = &mut state.settings;
    let at = s.focus.min(fields.len() - 1);
    match key {
        Key::Tab | Key::Down | Key::Enter => s.focus = (at + 1) % fields.len(),
        Key::BackTab | Key::Up => s.focus = (at + fields.len() - 1) % fields.len(),
        k => {
            if let Some(v) = value_mut(s, &names, fields[at]) {
                edit_text(v, k);
            }
        }
    }
    None
}

/// Draw it.
pub fn draw<'a>(state: &State, frame: &mut Frame<'_>, area: Rect, theme: Theme) -> Body<'a> {
    let fields = SettingsForm::fields(&state.image.params);
    let focus = state.settings.focus.min(fields.len() - 1);
    let visible = usize::from(area.height.saturating_sub(5));
    let first = focus.saturating_sub(visible.saturating_sub(1));
    let mut lines = vec![Line::default()];
    for (i, f) in fields.iter().enumerate().skip(first).take(visible) {
        let mut line = widgets::field(theme, &label(state, *f), &value(state, *f), i == focus);
        if let Some(p) = state.settings.field_problem(*f) {
            line.spans
                .push(Span::styled(format!("  x {p}"), theme.error()));
        }
        lines.push(line);
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        format!("  {}", help_of(state, fields[focus])),
        theme.dim(),
    )));
    frame.render_widget(Paragraph::new(lines).block(panel("Settings")), area);
    let status = fields.iter().find_map(|f| {
        state.settings.field_problem(*f).map(|p| {
            Line::from(Span::styled(
                format!(" x {}: {p}", label(state, *f)),
                theme.error(),
            ))
        })
    });
    Body {
        status,
        help: vec![("Up/Dn", "field")],
    }
}
